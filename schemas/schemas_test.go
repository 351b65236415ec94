package schemas

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
)

func TestCompile(t *testing.T) {
	if _, err := CompileWorkflow(); err != nil {
		t.Fatal(err)
	}
	if _, err := CompileConfig(); err != nil {
		t.Fatal(err)
	}
	wf, cfg, err := Compile()
	if err != nil || wf == nil || cfg == nil {
		t.Fatal(err)
	}
}

func TestIDs(t *testing.T) {
	for id, text := range map[string][]byte{WorkflowID: Workflow, ConfigID: Config} {
		var doc struct {
			ID     string `json:"$id"`
			Schema string `json:"$schema"`
		}
		if err := json.Unmarshal(text, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.ID != id {
			t.Errorf("$id = %q, want %q", doc.ID, id)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %q", id, doc.Schema)
		}
	}
}

// TestPropertiesDocumented: every property has a title and a description,
// so editors show help. False schemas (keys forbidden in a branch) and the
// properties of if conditions are not properties users write.
func TestPropertiesDocumented(t *testing.T) {
	for name, text := range map[string][]byte{"workflow": Workflow, "config": Config} {
		var doc any
		if err := json.Unmarshal(text, &doc); err != nil {
			t.Fatal(err)
		}
		var missing []string
		var walk func(x any, path string)
		walk = func(x any, path string) {
			m, ok := x.(map[string]any)
			if !ok {
				if l, ok := x.([]any); ok {
					for _, e := range l {
						walk(e, path+"[]")
					}
				}
				return
			}
			for k, v := range m {
				if k == "if" {
					continue
				}
				if k == "properties" {
					props, _ := v.(map[string]any)
					for p, ps := range props {
						pm, ok := ps.(map[string]any)
						if !ok {
							continue // false: forbidden in this branch
						}
						if pm["title"] == nil || pm["description"] == nil {
							missing = append(missing, path+"/properties/"+p)
						}
						walk(pm, path+"/properties/"+p)
					}
					continue
				}
				walk(v, path+"/"+k)
			}
		}
		walk(doc, "#")
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s schema: properties without title or description:\n%s", name, strings.Join(missing, "\n"))
		}
	}
}

func TestValidateDuration(t *testing.T) {
	for _, tt := range []struct {
		v  any
		ok bool
	}{
		{"30s", true}, {"1h30m", true}, {"1.5h", true}, {"500ms", true}, {"2µs", true},
		{"10 minutes", false}, {"-5s", false}, {"5", false}, {"99999999999999h", false},
		{42, true}, // not a string: the type keyword's business
	} {
		if err := validateDuration(tt.v); (err == nil) != tt.ok {
			t.Errorf("validateDuration(%v) = %v, want ok=%v", tt.v, err, tt.ok)
		}
	}
}
