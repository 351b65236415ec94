package state

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package table of ARCHITECTURE.md true: state
// imports the standard library and bbolt, nothing of vmcp's.
func TestImports(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			std := !strings.Contains(strings.Split(path, "/")[0], ".")
			if !std && path != "go.etcd.io/bbolt" && !strings.HasPrefix(path, "go.etcd.io/bbolt/") {
				t.Errorf("%s imports %s: state may import only the standard library and bbolt", name, path)
			}
		}
	}
}
