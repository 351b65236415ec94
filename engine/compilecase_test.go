package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/vmcp-dev/vmcp/dsl"
)

// TestCompileCases runs each ../testdata/compile/{valid,invalid}/*.txtar:
// a workflow (section "workflow.yaml"), loaded and compiled the way the
// CLI does it (LoadAndCompile: compiled even after load errors, the two
// stages' diagnostics merged), against the demo catalogue unless the case
// has its own "catalog.json" (an empty one means offline, no catalogue).
// Invalid cases compare the rendered diagnostics
// (with source lines and carets) with "diagnostics"; valid ones compare
// Plan.Dump with "plan". Run with -update to rewrite the goldens.
func TestCompileCases(t *testing.T) {
	demo, err := LoadCatalogFile("../testdata/catalog/demo.json")
	if err != nil {
		t.Fatal(err)
	}
	loader, err := dsl.NewLoader()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join("..", "testdata", "compile", kind, "*.txtar"))
		if kind == "invalid" && len(files) < 40 {
			t.Errorf("want at least 40 invalid cases, have %d", len(files))
		}
		for _, file := range files {
			t.Run(kind+"/"+strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
				ar, err := txtar.ParseFile(file)
				if err != nil {
					t.Fatal(err)
				}
				sec := map[string][]byte{}
				for _, f := range ar.Files {
					sec[f.Name] = f.Data
				}
				src, ok := sec["workflow.yaml"]
				if !ok {
					t.Fatal("no workflow.yaml section")
				}
				var cat Catalog = demo
				if b, ok := sec["catalog.json"]; ok {
					cat = nil
					if len(bytes.TrimSpace(b)) > 0 {
						path := filepath.Join(t.TempDir(), "catalog.json")
						if err := os.WriteFile(path, b, 0o644); err != nil {
							t.Fatal(err)
						}
						c, err := LoadCatalogFile(path)
						if err != nil {
							t.Fatal(err)
						}
						cat = c
					}
				}
				var got, want string
				_, p, ds := LoadAndCompile("workflow.yaml", src, loader, &CompileOptions{Catalog: cat})
				section := "plan"
				if kind == "invalid" {
					section = "diagnostics"
					if len(ds) == 0 {
						t.Fatal("compiled without errors; want diagnostics")
					}
					var b strings.Builder
					ds.Render(&b)
					got = b.String()
				} else {
					if len(ds) > 0 {
						t.Fatalf("unexpected diagnostics:\n%v", ds)
					}
					got = p.Dump()
				}
				want = string(sec[section])
				if *update {
					var files []txtar.File
					for _, f := range ar.Files {
						if f.Name != section {
							files = append(files, f)
						}
					}
					ar.Files = append(files, txtar.File{Name: section, Data: []byte(got)})
					if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				if got != want {
					t.Errorf("%s mismatch (run with -update to accept)\n--- got\n%s--- want\n%s", section, got, want)
				}
			})
		}
	}
}
