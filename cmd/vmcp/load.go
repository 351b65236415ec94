package main

import (
	"fmt"
	"io"
	"io/fs"
	"path"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
)

// compiled is one workflow file that loaded and compiled cleanly.
type compiled struct {
	wf   *dsl.Workflow
	plan *engine.Plan
}

// loader loads and compiles workflows, collecting every diagnostic so a
// command can report all problems at once.
type loader struct {
	// dl holds the compiled schemas, reused for every file (nil if they
	// failed to compile; the package-level functions then report why).
	dl    *dsl.Loader
	opts  *engine.CompileOptions
	diags dsl.Diagnostics
	// names maps a workflow name to where it was first defined, to report
	// a second definition (each name is one tool).
	names map[string]dsl.Pos
	// fromConfig is set while adding a config's workflows.
	fromConfig bool
	plans      []compiled
}

func newLoader(catalog engine.Catalog) *loader {
	dl, _ := dsl.NewLoader()
	return &loader{
		dl:    dl,
		opts:  &engine.CompileOptions{Catalog: catalog},
		names: map[string]dsl.Pos{},
	}
}

// file loads and compiles the workflow file at path.
func (l *loader) file(path string) {
	if l.dl == nil {
		l.add(dsl.LoadWorkflowFile(path))
		return
	}
	l.add(l.dl.LoadWorkflowFile(path))
}

// fsys loads and compiles every *.yaml file at the top of fsys, naming each
// prefix/<base name> in diagnostics.
func (l *loader) fsys(fsys fs.FS, prefix string) error {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return err
	}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		name = path.Join(prefix, name)
		if l.dl == nil {
			l.add(dsl.LoadWorkflow(name, data))
		} else {
			l.add(l.dl.LoadWorkflow(name, data))
		}
	}
	return nil
}

// add compiles a loaded workflow with engine.CompileLoaded, as the
// golden tests do: a workflow with load (schema) errors is compiled all
// the same when the loader returned one, so that one run reports every
// problem, each once. Only a clean workflow yields a plan (a config's
// workflow: one that compiles cleanly).
func (l *loader) add(wf *dsl.Workflow, loadDiags dsl.Diagnostics) {
	if wf == nil {
		l.diags.Append(loadDiags)
		return
	}
	name, pos := wf.Name.Value, dsl.Pos{}
	if wf.Src != nil {
		pos = wf.Src.NodePos(wf.Name.Node)
	}
	// The config loader reports duplicate names among a config's
	// workflows itself.
	if name != "" && !l.fromConfig {
		if first, dup := l.names[name]; dup {
			l.diags.Append(loadDiags)
			l.diags.Add(wf.Src, pos, "workflow %q is already defined at %s; each workflow name is one tool", name, first)
			return
		}
		l.names[name] = pos
	}
	if l.fromConfig {
		// The config loader's diagnostics, already in l.diags, hold this
		// workflow's load problems: merge the compiler's into them.
		plan, diags := engine.Compile(wf, l.opts)
		l.diags = engine.MergeDiagnostics(wf, l.diags, diags)
		if plan != nil {
			l.plans = append(l.plans, compiled{wf: wf, plan: plan})
		}
		return
	}
	plan, diags := engine.CompileLoaded(wf, loadDiags, l.opts)
	l.diags.Append(diags)
	if plan != nil {
		l.plans = append(l.plans, compiled{wf: wf, plan: plan})
	}
}

// report renders the diagnostics to w and says whether there were any.
func (l *loader) report(w io.Writer) bool {
	if len(l.diags) == 0 {
		return false
	}
	l.diags.Sort()
	l.diags.Render(w)
	n := len(l.diags)
	fmt.Fprintf(w, "%d %s\n", n, plural(n, "error", "errors"))
	return true
}

// loadCatalog reads an offline tool catalogue; "" means none. It returns
// the Catalog interface so that "none" is a true nil.
func loadCatalog(file string) (engine.Catalog, error) {
	if file == "" {
		return nil, nil
	}
	c, err := engine.LoadCatalogFile(file)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return c, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
