// Command dumpcheck reads mongodump directories with the official Go driver's BSON library - the
// library mongorestore parses them with - so that the index specs of Fluxa's dumps are checked
// where the real mongorestore cannot build them (FerretDB refuses its createIndexes; the rest of
// the interop runs the real tools from tools/mongo-tools: see docs/backup.md).
//
//	dumpcheck read DIR   parse every <coll>.metadata.json[.gz] the way mongorestore does and
//	                     every <coll>.bson[.gz]; print one JSON summary per collection
package main

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
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
	if len(os.Args) != 3 || os.Args[1] != "read" {
		fail("usage: dumpcheck read DIR")
	}
	if err := read(os.Args[2]); err != nil {
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
