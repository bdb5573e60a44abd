// Command ferretdb-embedded runs FerretDB v1.24 (SQLite backend) in-process on a
// loopback port. It exists because `go install .../cmd/ferretdb` panics on a missing
// build/version/version.txt, while the embeddable package does not.
package main

import (
	"context"
	"database/sql"
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
	"go.mongodb.org/mongo-driver/bson/primitive"
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
	capEvery := flag.Duration("oplog-trim-interval", time.Second, "trim local.oplog.rs to its capped limits this often (0: never)")
	// Readers of the oplog (the archiver, continuous validation) keep guards in
	// local.fluxa_oplog_guards: while one is fresh, the trim keeps every entry from the oldest
	// guard on and drops the rest, whatever the cap (docs/local-server.md).
	guardTTL := flag.Duration("oplog-guard-ttl", 2*time.Minute, "a guard not refreshed for this long no longer holds the oplog")
	keep := flag.Int64("oplog-keep", 0, "entries kept once every guard has passed them (0: the oplog's own max; a few thousand keep tails cheap)")
	guardMax := flag.Int64("oplog-guard-max", 100_000, "guards hold at most this many entries; past it the cap applies (the archive records a gap)")
	debugAddr := flag.String("debug-addr", "", "serve Go's /debug/pprof on this address (diagnosing hangs)")
	// A test run's server must not outlive a killed test run (the server runs in a session of its
	// own, so the signal that kills the run never reaches it): it stops once this process is gone.
	exitWith := flag.Int("exit-with-pid", 0, "stop when the process with this pid no longer exists (0: never)")
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
	// SIGUSR1 trims the oplog at once (tests, or a person, need not wait for the interval);
	// caught before "ready" is printed, so an early one never kills the server
	trimNow := make(chan os.Signal, 1)
	signal.Notify(trimNow, syscall.SIGUSR1)

	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	if *exitWith > 0 {
		go watchProcess(*exitWith, stop)
	}
	fmt.Printf("ready %s\n", f.MongoDBURI())
	go orderOplog(ctx, *dataDir+"/local.sqlite")
	if *capEvery > 0 {
		g := guardSettings{ttl: *guardTTL, max: *guardMax, keep: *keep, sqlite: "file:" + *dataDir + "/local.sqlite?_pragma=busy_timeout(10000)"}
		go trimOplog(ctx, f.MongoDBURI(), *capEvery, trimNow, g)
	}
	<-done
}

// watchProcess calls stop once pid no longer exists or is a zombie (a killed child its parent
// has not reaped yet still answers kill -0), checked every second.
func watchProcess(pid int, stop func()) {
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || isZombie(pid) {
			fmt.Fprintf(os.Stderr, "process %d is gone: stopping\n", pid)
			stop()
			return
		}
		time.Sleep(time.Second)
	}
}

// isZombie reads the state letter of /proc/PID/stat (after the command in parentheses).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
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

// guardSettings: how guards hold the oplog, and where the oplog's SQLite file is.
type guardSettings struct {
	ttl    time.Duration
	max    int64
	keep   int64
	sqlite string
}

// trimOplog trims local.oplog.rs every interval. With a fresh guard it deletes the entries older
// than the oldest guard (trimToGuards); otherwise it runs `compact`: FerretDB then deletes the
// oldest entries beyond the collection's `max` count and `size` bytes. Each compact ANALYZEs the
// whole oplog (about 0.1 s at 20k entries), hence a short oplog and an interval of a second.
func trimOplog(ctx context.Context, uri string, every time.Duration, now <-chan os.Signal, g guardSettings) {
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintf(os.Stderr, "oplog trim disabled: %v\n", err)
		return
	}
	defer client.Disconnect(context.Background())
	local := client.Database("local")
	guards := local.Collection(guardsCollection)
	// the collection tells readers that this server honours guards, and for how long
	if _, err := guards.UpdateOne(ctx, bson.D{{Key: "_id", Value: "__settings__"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "ttl_s", Value: g.ttl.Seconds()}}}},
		options.Update().SetUpsert(true)); err != nil {
		fmt.Fprintf(os.Stderr, "oplog guards disabled: %v\n", err)
	}
	db, err := sql.Open("sqlite", g.sqlite)
	if err != nil {
		fmt.Fprintf(os.Stderr, "oplog guards disabled: %v\n", err)
		db = nil
	} else {
		defer db.Close()
	}
	for {
		manual := false // a trim asked for by SIGUSR1 says what it did (tests wait for that line)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		case <-now:
			manual = true
		}
		if db != nil {
			held, msg, gerr := trimToGuards(ctx, guards, db, g)
			if gerr != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "oplog trim to guards: %v\n", gerr)
			}
			if msg != "" && (manual || !held) {
				fmt.Fprintln(os.Stderr, msg)
			}
			if !held {
				// no guard holds it: the newest `max` entries stay, in one statement (compact
				// deletes at most 32766 at once and could never catch up with an oplog that
				// outgrew its cap by more)
				n, terr := trimToCap(ctx, local, db)
				if terr != nil && ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "oplog trim to its cap: %v\n", terr)
				} else if manual {
					fmt.Fprintf(os.Stderr, "oplog trim (requested): no guard holds the oplog; %d entries past its cap deleted\n", n)
				}
			}
			if held {
				continue
			}
		}
		err := local.RunCommand(ctx, bson.D{{Key: "compact", Value: "oplog.rs"}}).Err()
		var cmdErr mongo.CommandError
		switch {
		case err == nil, ctx.Err() != nil, errors.As(err, &cmdErr) && cmdErr.Code == 26: // 26: no oplog yet
		case strings.Contains(err.Error(), "too many SQL variables"):
			// FerretDB deletes at most 32766 entries at once: the oplog outgrew its cap by more
			// than that between two trims and compact can never catch up again. Start it afresh,
			// as a rolled-over MongoDB oplog would be: the archiver records the gap loudly.
			if rerr := recreateOplog(ctx, local); rerr != nil {
				fmt.Fprintf(os.Stderr, "oplog trim: %v; recreating it failed: %v\n", err, rerr)
			} else {
				fmt.Fprintln(os.Stderr, "oplog trim: the oplog outgrew its cap by more than FerretDB can delete at once; "+
					"recreated it empty (the oplog archive will record a gap)")
			}
		default:
			fmt.Fprintf(os.Stderr, "oplog trim: %v\n", err)
		}
	}
}

// oplogTable is the SQLite table of local.oplog.rs ("" when there is no oplog yet).
func oplogTable(ctx context.Context, db *sql.DB) (string, error) {
	var table string
	err := db.QueryRowContext(ctx, `SELECT table_name FROM _ferretdb_collections WHERE name = 'oplog.rs'`).Scan(&table)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return table, err
}

// capMax is local.oplog.rs's `max` option (0: none, or no oplog).
func capMax(ctx context.Context, local *mongo.Database) int64 {
	specs, err := local.ListCollectionSpecifications(ctx, bson.D{{Key: "name", Value: "oplog.rs"}})
	if err != nil || len(specs) == 0 {
		return 0
	}
	v, err := specs[0].Options.LookupErr("max")
	if err != nil {
		return 0
	}
	max, ok := v.AsInt64OK()
	if !ok {
		return 0
	}
	return max
}

// trimToCap deletes all but the newest `max` entries (the capped collection's own limit).
func trimToCap(ctx context.Context, local *mongo.Database, db *sql.DB) (int64, error) {
	max := capMax(ctx, local)
	if max <= 0 {
		return 0, nil // no entry cap: compact applies the size cap
	}
	table, err := oplogTable(ctx, db)
	if err != nil || table == "" {
		return 0, err
	}
	q := fmt.Sprintf(`DELETE FROM %[1]q WHERE _ferretdb_record_id <= (SELECT _ferretdb_record_id FROM %[1]q ORDER BY _ferretdb_record_id DESC LIMIT 1 OFFSET ?)`, table)
	res, err := db.ExecContext(ctx, q, max)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// recreateOplog drops local.oplog.rs and creates it again with the same capped limits.
func recreateOplog(ctx context.Context, local *mongo.Database) error {
	specs, err := local.ListCollectionSpecifications(ctx, bson.D{{Key: "name", Value: "oplog.rs"}})
	if err != nil || len(specs) == 0 {
		return fmt.Errorf("reading its options: %v", err)
	}
	create := bson.D{{Key: "create", Value: "oplog.rs"}, {Key: "capped", Value: true}}
	for _, key := range []string{"size", "max"} {
		if v, err := specs[0].Options.LookupErr(key); err == nil {
			create = append(create, bson.E{Key: key, Value: v})
		}
	}
	if err := local.Collection("oplog.rs").Drop(ctx); err != nil {
		return err
	}
	return local.RunCommand(ctx, create).Err()
}

const guardsCollection = "fluxa_oplog_guards"

// trimToGuards deletes the oplog entries before the oldest fresh guard and reports whether
// guards hold the oplog (then the cap is not applied). The delete goes to SQLite directly: a
// `delete` command on local.oplog.rs would itself be written to the oplog, one entry per entry
// deleted. FerretDB stores ts as a JSON number, (seconds << 32) | increment. Guards holding more
// than g.max entries no longer hold: the caller then trims to the cap and says so.
func trimToGuards(ctx context.Context, guards *mongo.Collection, db *sql.DB, g guardSettings) (bool, string, error) {
	cur, err := guards.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$ne", Value: "__settings__"}}}})
	if err != nil {
		return false, "", err
	}
	var docs []struct {
		ID any                 `bson:"_id"`
		TS primitive.Timestamp `bson:"ts"`
		At time.Time           `bson:"at"`
	}
	if err = cur.All(ctx, &docs); err != nil {
		return false, "", err
	}
	var floor int64 = -1
	for _, d := range docs {
		if time.Since(d.At) > g.ttl {
			continue // its reader stopped: it no longer holds the oplog
		}
		if v := int64(d.TS.T)<<32 | int64(d.TS.I); floor < 0 || v < floor {
			floor = v
		}
	}
	if floor < 0 {
		return false, "", nil
	}
	table, err := oplogTable(ctx, db)
	if err != nil || table == "" {
		return table == "" && err == nil, "", err
	}
	// Everything inserted before the first entry at or past the floor, except the newest `keep`.
	// By record order, not by ts: concurrent writers can insert an entry after one with a higher
	// ts, and a tailable cursor resumes from the last record it returned - which must still be there.
	keep := g.keep
	if keep <= 0 {
		keep = capMax(ctx, guards.Database())
	}
	q := fmt.Sprintf(`DELETE FROM %[1]q WHERE _ferretdb_record_id < (SELECT min(_ferretdb_record_id) FROM %[1]q `+
		`WHERE json_extract(_ferretdb_sjson, '$.ts') >= ?1) AND _ferretdb_record_id <= coalesce((SELECT _ferretdb_record_id `+
		`FROM %[1]q ORDER BY _ferretdb_record_id DESC LIMIT 1 OFFSET ?2), -1)`, table)
	res, err := db.ExecContext(ctx, q, floor, keep)
	if err != nil {
		return false, "", err
	}
	deleted, _ := res.RowsAffected()
	if deleted > 0 { // give the pages back, as compact does: a scan then reads fewer of them
		if _, err = db.ExecContext(ctx, `PRAGMA incremental_vacuum`); err != nil {
			return false, "", err
		}
	}
	var n int64
	if err = db.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*) FROM %q`, table)).Scan(&n); err != nil {
		return false, "", err
	}
	if n > g.max {
		return false, fmt.Sprintf("oplog trim: guards hold %d entries, more than -oplog-guard-max %d: trimming to the "+
			"cap (a reader behind it will find a gap)", n, g.max), nil
	}
	return true, fmt.Sprintf("oplog trim (requested): guards hold the oplog from %d:%d; %d older entries deleted, %d kept",
		floor>>32, floor&0xffffffff, deleted, n), nil
}

// orderTrigger makes local.oplog.rs visible in the order its entries commit. FerretDB gives an
// oplog entry its ts (and its record id) before the SQLite write lock is taken, so two concurrent
// writers commit out of order: a batch with lower ts and record ids lands after a newer one that a
// tailable cursor already returned, and the cursor - which resumes after the last record id it
// returned - never sees it (nor does any `ts > position` reader); the archive lost whole insert
// batches of a `fluxa generate` this way. A BEFORE INSERT trigger runs under the write lock: an
// entry whose record id or ts is not above the newest entry's is re-inserted with the next record
// id and a ts above the newest one (each kept where it is already higher), and FerretDB's row is
// dropped (RAISE(IGNORE)); an entry already in order goes in untouched (no JSON rewritten). Record
// order = ts order = commit order, as a MongoDB oplog shows it to readers. No collision: a value
// the trigger hands out that FerretDB later assigns to another entry is not above the newest, so
// that entry is re-stamped too. `wall` is left as FerretDB wrote it. (SQLite's recursive_triggers
// is off, so the re-insert does not fire the trigger again.)
const orderTrigger = "fluxa_oplog_commit_order"

func orderTriggerSQL(table string) string {
	return fmt.Sprintf(`CREATE TRIGGER %[2]q BEFORE INSERT ON %[1]q
WHEN NEW._ferretdb_record_id <= (SELECT max(_ferretdb_record_id) FROM %[1]q)
  OR json_extract(NEW._ferretdb_sjson, '$.ts') <= (SELECT json_extract(_ferretdb_sjson, '$.ts') FROM %[1]q ORDER BY _ferretdb_record_id DESC LIMIT 1)
BEGIN
  INSERT INTO %[1]q (_ferretdb_record_id, _ferretdb_sjson) VALUES (
    max(NEW._ferretdb_record_id, (SELECT max(_ferretdb_record_id) FROM %[1]q) + 1),
    json_set(NEW._ferretdb_sjson, '$.ts', max(json_extract(NEW._ferretdb_sjson, '$.ts'),
      (SELECT json_extract(_ferretdb_sjson, '$.ts') + 1 FROM %[1]q ORDER BY _ferretdb_record_id DESC LIMIT 1))));
  SELECT RAISE(IGNORE);
END`, table, orderTrigger)
}

// orderOplog installs the trigger on local.oplog.rs as soon as the oplog exists (it is created
// after the server starts), and again if the oplog is recreated: checked every 50 ms until the
// first install, then every second.
func orderOplog(ctx context.Context, path string) {
	for { // never create the file ourselves: FerretDB creates it with the database "local"
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		fmt.Fprintf(os.Stderr, "oplog commit order not enforced: %v\n", err)
		return
	}
	defer db.Close()
	every := 50 * time.Millisecond
	for {
		table, err := oplogTable(ctx, db)
		if err == nil && table != "" {
			want := orderTriggerSQL(table)
			var have string // the installed definition; replaced when an older version differs
			err = db.QueryRowContext(ctx, `SELECT coalesce(max(sql), '') FROM sqlite_master WHERE type = 'trigger' AND name = ? AND tbl_name = ?`,
				orderTrigger, table).Scan(&have)
			if err == nil && have != want {
				_, err = db.ExecContext(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS %q; %s`, orderTrigger, want))
			}
			if err == nil {
				every = time.Second
			}
		}
		if err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "no such table") {
			fmt.Fprintf(os.Stderr, "oplog commit order: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
