package engine

import (
	"path/filepath"
	"testing"

	"github.com/vmcp-dev/vmcp/dsl"
)

// loadShipped loads a workflow from workflows/ and the demo catalogue.
func loadShipped(t testing.TB, name string) (*dsl.Workflow, Catalog) {
	t.Helper()
	wf, ds := dsl.LoadWorkflowFile(filepath.Join("..", "workflows", name))
	if len(ds) > 0 {
		t.Fatalf("load %s: %v", name, ds)
	}
	cat, err := LoadCatalogFile(filepath.Join("..", "testdata", "catalog", "demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	return wf, cat
}

// TestShippedWorkflowsCompile: every workflow in workflows/ compiles
// against the demo catalogue, and the ToolHive proposal's two examples,
// written as in the proposal, compile against theirs.
func TestShippedWorkflowsCompile(t *testing.T) {
	files, _ := filepath.Glob("../workflows/*.yaml")
	if len(files) < 4 {
		t.Fatalf("want at least 4 shipped workflows, found %d", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			wf, cat := loadShipped(t, filepath.Base(f))
			if _, ds := Compile(wf, &CompileOptions{Catalog: cat}); len(ds) > 0 {
				t.Fatal(ds)
			}
		})
	}
	cat, err := LoadCatalogFile("../testdata/proposal/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"deploy_and_notify.yaml", "investigate_incident.yaml"} {
		t.Run("proposal/"+name, func(t *testing.T) {
			wf, ds := dsl.LoadWorkflowFile(filepath.Join("..", "testdata", "proposal", name))
			if len(ds) > 0 {
				t.Fatal(ds)
			}
			if _, ds := Compile(wf, &CompileOptions{Catalog: cat}); len(ds) > 0 {
				t.Fatal(ds)
			}
		})
	}
}
