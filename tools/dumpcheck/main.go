// Command dumpcheck reads and writes mongodump directories with the official Go driver's BSON
// library - the library mongodump and mongorestore are built on. It is the interop check that runs
// everywhere: the real mongo-tools are used when they can be had (FLUXA_MONGOTOOLS_BIN, PATH, a
// checkout, or the Go module proxy, which refuses mongo-tools on some machines), and 'write' stands
// in for the real mongodump when they cannot; 'read' checks our index specs, which the real
// mongorestore cannot build on FerretDB. See docs/backup.md.
//
//	dumpcheck read DIR           parse every <coll>.metadata.json[.gz] the way mongorestore does and
//	                             every <coll>.bson[.gz]; print one JSON summary per collection
//	dumpcheck write URI DB DIR   dump DB the way mongodump does (raw documents back to back,
//	   [-gzip]                   canonical Extended JSON metadata) into DIR/DB/
package main

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// metadata has the shape mongorestore unmarshals <coll>.metadata.json into.
type metadata struct {
	Options        bson.D   `bson:"options,omitempty"`
	Indexes        []bson.D `bson:"indexes"`
	UUID           string   `bson:"uuid,omitempty"`
	CollectionName string   `bson:"collectionName"`
	Type           string   `bson:"type,omitempty"`
}

type summary struct {
	Collection string            `json:"collection"`
	Type       string            `json:"type"`
	UUID       string            `json:"uuid"`
	Count      int               `json:"count"`
	ContentSHA string            `json:"content_sha256"`
	Indexes    map[string]string `json:"indexes"` // name -> key as canonical Extended JSON
	Options    []string          `json:"options"`
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: dumpcheck read DIR | dumpcheck write URI DB DIR [-gzip]")
	}
	var err error
	switch os.Args[1] {
	case "read":
		err = read(os.Args[2])
	case "write":
		if len(os.Args) < 5 {
			fail("usage: dumpcheck write URI DB DIR [-gzip]")
		}
		err = write(os.Args[2], os.Args[3], os.Args[4], len(os.Args) > 5 && os.Args[5] == "-gzip")
	default:
		fail("unknown command " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "dumpcheck:", msg)
	os.Exit(2)
}

func open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil || !strings.HasSuffix(path, ".gz") {
		return f, err
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{z, f}, nil
}

func read(dir string) error {
	metas, _ := filepath.Glob(filepath.Join(dir, "*.metadata.json*"))
	sort.Strings(metas)
	out := json.NewEncoder(os.Stdout)
	for _, mpath := range metas {
		gz := strings.HasSuffix(mpath, ".gz")
		r, err := open(mpath)
		if err != nil {
			return err
		}
		text, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", mpath, err)
		}
		var m metadata
		if err := bson.UnmarshalExtJSON(text, true, &m); err != nil { // canonical, as mongorestore
			return fmt.Errorf("%s: %w", mpath, err)
		}
		s := summary{Collection: m.CollectionName, Type: m.Type, UUID: m.UUID, Indexes: map[string]string{}}
		for _, e := range m.Options {
			s.Options = append(s.Options, e.Key)
		}
		for _, idx := range m.Indexes {
			var name string
			var key bson.D
			for _, e := range idx {
				switch e.Key {
				case "name":
					name, _ = e.Value.(string)
				case "key":
					key, _ = e.Value.(bson.D)
				}
			}
			if name == "" || len(key) == 0 {
				return fmt.Errorf("%s: an index without name or key: %v", mpath, idx)
			}
			kj, err := bson.MarshalExtJSON(key, true, false)
			if err != nil {
				return err
			}
			s.Indexes[name] = string(kj)
		}
		if m.Type != "view" {
			base := strings.TrimSuffix(strings.TrimSuffix(mpath, ".gz"), ".metadata.json")
			data := base + ".bson"
			if gz {
				data += ".gz"
			}
			if s.Count, s.ContentSHA, err = readBSON(data); err != nil {
				return err
			}
		}
		if err := out.Encode(s); err != nil {
			return err
		}
	}
	return nil
}

// readBSON validates every document and returns the count and the order-independent content
// hash Fluxa's manifest records (sum of the documents' SHA-256 digests modulo 2^256).
func readBSON(path string) (int, string, error) {
	r, err := open(path)
	if err != nil {
		return 0, "", err
	}
	defer r.Close()
	acc, mod := new(big.Int), new(big.Int).Lsh(big.NewInt(1), 256)
	n := 0
	var head [4]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err == io.EOF {
			break
		} else if err != nil {
			return 0, "", fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		size := int(binary.LittleEndian.Uint32(head[:]))
		if size < 5 {
			return 0, "", fmt.Errorf("%s: document %d: length %d", path, n, size)
		}
		doc := make([]byte, size)
		copy(doc, head[:])
		if _, err := io.ReadFull(r, doc[4:]); err != nil {
			return 0, "", fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		if err := bson.Raw(doc).Validate(); err != nil {
			return 0, "", fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		d := sha256.Sum256(doc)
		acc.Add(acc, new(big.Int).SetBytes(d[:]))
		acc.Mod(acc, mod)
		n++
	}
	return n, fmt.Sprintf("%064x", acc), nil
}

func write(uri, dbName, dir string, gz bool) error {
	ctx := context.Background()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		return err
	}
	defer client.Disconnect(ctx)
	db := client.Database(dbName)
	specs, err := db.ListCollectionSpecifications(ctx, bson.D{})
	if err != nil {
		return err
	}
	out := filepath.Join(dir, dbName)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	suffix := ""
	if gz {
		suffix = ".gz"
	}
	for _, spec := range specs {
		if strings.HasPrefix(spec.Name, "system.") {
			continue
		}
		m := metadata{CollectionName: spec.Name, Type: spec.Type, Indexes: []bson.D{}}
		if spec.Options != nil {
			if err := bson.Unmarshal(spec.Options, &m.Options); err != nil {
				return err
			}
		}
		if spec.UUID != nil {
			m.UUID = hex.EncodeToString(spec.UUID.Data)
		}
		if spec.Type != "view" {
			cur, err := db.Collection(spec.Name).Indexes().List(ctx)
			if err != nil {
				return err
			}
			for cur.Next(ctx) {
				var idx bson.D
				if err := bson.Unmarshal(cur.Current, &idx); err != nil {
					return err
				}
				m.Indexes = append(m.Indexes, idx)
			}
			if err := dumpDocs(ctx, db.Collection(spec.Name), filepath.Join(out, spec.Name+".bson"+suffix), gz); err != nil {
				return err
			}
		}
		text, err := bson.MarshalExtJSON(m, true, false)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(out, spec.Name+".metadata.json"+suffix), gz, func(w io.Writer) error {
			_, err := w.Write(text)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

func dumpDocs(ctx context.Context, coll *mongo.Collection, path string, gz bool) error {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	return writeFile(path, gz, func(w io.Writer) error {
		for cur.Next(ctx) {
			if _, err := w.Write(cur.Current); err != nil {
				return err
			}
		}
		return cur.Err()
	})
}

func writeFile(path string, gz bool, body func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var w io.Writer = f
	var z *gzip.Writer
	if gz {
		z = gzip.NewWriter(f)
		w = z
	}
	if err := body(w); err != nil {
		f.Close()
		return err
	}
	if z != nil {
		if err := z.Close(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
