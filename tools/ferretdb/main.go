// Command ferretdb-embedded runs FerretDB v1.24 (SQLite backend) in-process on a
// loopback port. It exists because `go install .../cmd/ferretdb` panics on a missing
// build/version/version.txt, while the embeddable package does not.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "./data", "directory for the SQLite files")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	// NORMAL keeps the database consistent after a crash of the process (WAL mode) and skips
	// an fsync per commit; FULL also survives power loss, at a large cost in write speed.
	sync := flag.String("sqlite-synchronous", "normal", "SQLite synchronous pragma: normal or full")
	// Embedded FerretDB never trims capped collections by itself (its cleanup timer is off), and
	// every tail of local.oplog.rs re-reads the whole collection, so an untrimmed oplog makes the
	// archiver slower with every write. `compact` on a capped collection trims it to its limits.
	capEvery := flag.Duration("oplog-trim-interval", 500*time.Millisecond, "trim local.oplog.rs to its capped limits this often (0: never)")
	debugAddr := flag.String("debug-addr", "", "serve Go's /debug/pprof on this address (diagnosing hangs)")
	flag.Parse()
	if *debugAddr != "" {
		go func() { fmt.Fprintln(os.Stderr, http.ListenAndServe(*debugAddr, nil)) }()
	}

	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "cannot create data dir %s: %v\n", *dataDir, err)
		os.Exit(2)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dataDir + "/?_pragma=synchronous(" + *sync + ")",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level(*logLevel)})),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot configure FerretDB: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	fmt.Printf("ready %s\n", f.MongoDBURI())
	if *capEvery > 0 {
		go trimOplog(ctx, f.MongoDBURI(), *capEvery)
	}
	<-done
}

func level(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "error":
		return slog.LevelError
	default:
		return slog.LevelWarn
	}
}

// trimOplog runs `compact` on local.oplog.rs every interval: FerretDB then deletes the oldest
// entries beyond the collection's `max` count and `size` bytes.
func trimOplog(ctx context.Context, uri string, every time.Duration) {
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintf(os.Stderr, "oplog trim disabled: %v\n", err)
		return
	}
	defer client.Disconnect(context.Background())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := client.Database("local").RunCommand(ctx, bson.D{{Key: "compact", Value: "oplog.rs"}}).Err()
		var cmdErr mongo.CommandError
		if err != nil && ctx.Err() == nil && !(errors.As(err, &cmdErr) && cmdErr.Code == 26) { // 26: no oplog yet
			hint := ""
			if strings.Contains(err.Error(), "too many SQL variables") {
				hint = " (FerretDB deletes at most 32766 entries at once: the oplog grew that far past its cap between trims; lower -oplog-trim-interval)"
			}
			fmt.Fprintf(os.Stderr, "oplog trim: %v%s\n", err, hint)
		}
	}
}
