package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/vmcp-dev/vmcp"

// allowed lists, per package, the module's packages it may import (the
// table in docs/architecture.md). Packages not listed may import nothing
// of the module; "*" allows everything.
var allowed = map[string][]string{
	"schemas":          nil,
	"dsl":              {"schemas"},
	"steps":            {"dsl"},
	"engine":           {"dsl", "steps"},
	"authz":            {"dsl", "engine"},
	"elicitation":      nil,
	"state":            nil,
	"state/postgres":   {"state"},
	"state/statetest":  {"state"},
	"backends/demo":    nil,
	"backends/outauth": nil,
	"backends":         {"backends/demo", "backends/outauth"},
	"workflows":        nil,
	"telemetry":        nil,
	"server":           {"schemas", "dsl", "steps", "engine", "authz", "elicitation", "state", "state/postgres", "backends", "backends/demo", "backends/outauth", "workflows", "telemetry"},
	"cmd/vmcp":         {"*"},
	"bench":            {"*"},
	"archtest":         nil,
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if pkg == "e2e" {
			return nil // tests only
		}
		rules, known := allowed[pkg]
		if !known {
			t.Errorf("package %s is not in the import table of archtest (and docs/architecture.md): add it", pkg)
			return nil
		}
		seen[pkg] = true
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			dep, internal := strings.CutPrefix(p, module+"/")
			if !internal || dep == pkg {
				continue
			}
			if !permitted(rules, dep) {
				t.Errorf("%s imports %s: not allowed (may import: %s)", rel+"/"+filepath.Base(path), dep, strings.Join(rules, ", "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for pkg := range allowed {
		if !seen[pkg] && pkg != "archtest" && !permitted(allowed[pkg], "*") {
			missing = append(missing, pkg)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("packages in the table but not found (stale table?): %v", missing)
	}
}

func permitted(rules []string, dep string) bool {
	for _, r := range rules {
		if r == "*" || r == dep {
			return true
		}
	}
	return false
}
