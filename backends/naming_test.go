package backends

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func rawTools(t *testing.T, names ...string) []*RawTool {
	t.Helper()
	var out []*RawTool
	for _, n := range names {
		rt, err := ParseRawTool(json.RawMessage(fmt.Sprintf(`{"name":%q,"description":"d","inputSchema":{"type":"object","$defs":{"x":{"type":"string"}}},"annotations":{"readOnlyHint":true}}`, n)))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rt)
	}
	return out
}

func advertised(es []*Entry) []string {
	var out []string
	for _, e := range es {
		if e.Advertised != "" {
			out = append(out, e.Advertised+"="+e.Ref())
		}
	}
	sort.Strings(out)
	return out
}

func TestAggregate(t *testing.T) {
	order := []string{"github", "files", "jira"}
	tools := map[string][]*RawTool{
		"github": rawTools(t, "search", "get_issue"),
		"files":  rawTools(t, "search", "read_file"),
		"jira":   rawTools(t, "get_issue", "create"),
	}
	tests := []struct {
		name    string
		rules   NamingRules
		want    []string
		wantErr string
	}{
		{name: "prefix default", rules: NamingRules{},
			want: []string{"files_read_file=files.read_file", "files_search=files.search", "github_get_issue=github.get_issue", "github_search=github.search", "jira_create=jira.create", "jira_get_issue=jira.get_issue"}},
		{name: "prefix dotted", rules: NamingRules{PrefixFormat: "{backend}."},
			want: []string{"files.read_file=files.read_file", "files.search=files.search", "github.get_issue=github.get_issue", "github.search=github.search", "jira.create=jira.create", "jira.get_issue=jira.get_issue"}},
		{name: "priority contest between unlisted backends", rules: NamingRules{Strategy: StrategyPriority, PriorityOrder: []string{"jira"}},
			wantErr: "tool name \"search\" is claimed by files.search and github.search; none of these backends is in priority_order"},
		{name: "priority all listed", rules: NamingRules{Strategy: StrategyPriority, PriorityOrder: []string{"jira", "files", "github"}},
			want: []string{"create=jira.create", "get_issue=jira.get_issue", "read_file=files.read_file", "search=files.search"}},
		{name: "priority listed beats unlisted", rules: NamingRules{Strategy: StrategyPriority, PriorityOrder: []string{"files", "jira"}},
			want: []string{"create=jira.create", "get_issue=jira.get_issue", "read_file=files.read_file", "search=files.search"}},
		{name: "manual lists every conflict", rules: NamingRules{Strategy: StrategyManual},
			wantErr: "2 tool name conflicts (conflict_resolution: manual):\n  - tool name \"get_issue\" is claimed by github.get_issue and jira.get_issue; resolve it with an override (aggregation.tools[].overrides)\n  - tool name \"search\" is claimed by files.search and github.search; resolve it with an override (aggregation.tools[].overrides)"},
		{name: "manual resolved by overrides", rules: NamingRules{Strategy: StrategyManual, PerBackend: map[string]*BackendRules{
			"files": {Overrides: map[string]Override{"search": {Name: "search_files"}}},
			"jira":  {Overrides: map[string]Override{"get_issue": {Name: "get_ticket"}}},
		}}, want: []string{"create=jira.create", "get_issue=github.get_issue", "get_ticket=jira.get_issue", "read_file=files.read_file", "search=github.search", "search_files=files.search"}},
		{name: "override produces a name twice", rules: NamingRules{PerBackend: map[string]*BackendRules{
			"files": {Overrides: map[string]Override{"read_file": {Name: "github_search"}}},
		}}, wantErr: "tool name \"github_search\" is claimed by files.read_file and github.search; the same name is produced twice"},
		{name: "filter and exclude_all hide", rules: NamingRules{PerBackend: map[string]*BackendRules{
			"files": {Filter: []string{"read_file"}},
			"jira":  {ExcludeAll: true},
		}}, want: []string{"files_read_file=files.read_file", "github_get_issue=github.get_issue", "github_search=github.search"}},
		{name: "composite clash", rules: NamingRules{Reserved: map[string]string{"github_search": "composite tool github_search (workflows/x.yaml)"}},
			wantErr: "tool name \"github_search\" is claimed by github.search and composite tool github_search (workflows/x.yaml)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, _, err := Aggregate(order, tools, &tt.rules)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, advertised(es)); diff != "" {
				t.Errorf("advertised (-want +got):\n%s", diff)
			}
			if len(es) != 6 {
				t.Errorf("every tool stays in the catalogue (hidden ones callable), got %d", len(es))
			}
		})
	}
}

func TestAggregateKeepsSchemasAndOverrides(t *testing.T) {
	tools := map[string][]*RawTool{"fs": rawTools(t, "read")}
	es, _, err := Aggregate([]string{"fs"}, tools, &NamingRules{PerBackend: map[string]*BackendRules{
		"fs": {Overrides: map[string]Override{"read": {Description: "Read a file", Annotations: json.RawMessage(`{"idempotentHint":true}`)}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(es[0].JSON, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"name": "fs_read", "description": "Read a file",
		"inputSchema": map[string]any{"type": "object", "$defs": map[string]any{"x": map[string]any{"type": "string"}}},
		"annotations": map[string]any{"readOnlyHint": true, "idempotentHint": true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tool JSON (-want +got):\n%s", diff)
	}
}

func TestAggregateSanitisesNames(t *testing.T) {
	tools := map[string][]*RawTool{"x": rawTools(t, "a/b c")}
	es, warnings, err := Aggregate([]string{"x"}, tools, &NamingRules{})
	if err != nil {
		t.Fatal(err)
	}
	if es[0].Advertised != "x_a_b_c" || len(warnings) != 1 {
		t.Fatalf("got %q, warnings %v", es[0].Advertised, warnings)
	}
}
