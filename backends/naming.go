package backends

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Conflict resolution strategies (SPEC §2).
const (
	StrategyPrefix   = "prefix"
	StrategyPriority = "priority"
	StrategyManual   = "manual"
)

// NamingRules decide which backend tools clients see, and under what name.
type NamingRules struct {
	Strategy      string // prefix (default) | priority | manual
	PrefixFormat  string // default "{backend}_"
	PriorityOrder []string
	// PerBackend holds filter, exclude_all and overrides by backend name.
	PerBackend map[string]*BackendRules
	// Reserved are names taken by composite tools: a backend tool that
	// would be advertised under one of them is a conflict naming both.
	Reserved map[string]string // name → what holds it ("composite tool")
}

// BackendRules are one backend's entry of aggregation.tools.
type BackendRules struct {
	// Filter, when non-empty, is the advertised subset (original names).
	Filter     []string
	ExcludeAll bool
	// Overrides by original tool name.
	Overrides map[string]Override
}

// Override renames, redescribes or re-annotates one tool. Empty fields
// keep the backend's value. An override name is the final advertised name
// (it is not prefixed).
type Override struct {
	Name        string
	Description string
	Annotations json.RawMessage
}

// RawTool is one tool as a backend listed it: the exact JSON object plus
// the fields vmcp needs to read.
type RawTool struct {
	Name        string
	Description string
	// JSON is the tool object exactly as the backend sent it.
	JSON json.RawMessage
	// InputSchema, OutputSchema and Annotations are the raw sub-objects.
	InputSchema  json.RawMessage
	OutputSchema json.RawMessage
	Annotations  json.RawMessage
}

// ParseRawTool reads the fields vmcp needs from a tool object, keeping
// the bytes.
func ParseRawTool(b json.RawMessage) (*RawTool, error) {
	var t struct {
		Name         string          `json:"name"`
		Description  string          `json:"description"`
		InputSchema  json.RawMessage `json:"inputSchema"`
		OutputSchema json.RawMessage `json:"outputSchema"`
		Annotations  json.RawMessage `json:"annotations"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	if t.Name == "" {
		return nil, fmt.Errorf("tool without a name")
	}
	return &RawTool{Name: t.Name, Description: t.Description, JSON: append(json.RawMessage(nil), b...),
		InputSchema: t.InputSchema, OutputSchema: t.OutputSchema, Annotations: t.Annotations}, nil
}

// Entry is one backend tool in the aggregated catalogue.
type Entry struct {
	Backend string
	Tool    *RawTool
	// Advertised is the name clients see; "" when hidden (filter,
	// exclude_all). Hidden tools stay callable from workflows.
	Advertised string
	// JSON is the tool object clients receive: the backend's bytes with
	// name (and any overridden description or annotations) replaced.
	JSON json.RawMessage
}

// Ref is the workflow reference "<backend>.<original name>".
func (e *Entry) Ref() string { return e.Backend + "." + e.Tool.Name }

// Conflict is one advertised name claimed more than once.
type Conflict struct {
	Name     string
	Backends []string // "backend" or "backend.tool", sorted
	Why      string
}

func (c Conflict) String() string {
	return fmt.Sprintf("tool name %q is claimed by %s%s", c.Name, strings.Join(c.Backends, " and "), c.Why)
}

// ConflictError lists every unresolved conflict.
type ConflictError struct {
	Strategy  string
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d tool name conflict", len(e.Conflicts))
	if len(e.Conflicts) != 1 {
		b.WriteString("s")
	}
	fmt.Fprintf(&b, " (conflict_resolution: %s):", e.Strategy)
	for _, c := range e.Conflicts {
		b.WriteString("\n  - ")
		b.WriteString(c.String())
	}
	return b.String()
}

// Tool names clients accept (Claude Desktop rejects others); dots only when
// the user's prefix_format adds them.
var (
	validToolName       = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	validDottedToolName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,64}$`)
)

// Aggregate applies the naming rules to every backend's tools (backends in
// config order). It returns the entries (every tool, hidden ones included)
// and an error listing every conflict that the strategy does not resolve.
// Warnings (sanitised names) are returned separately.
func Aggregate(order []string, tools map[string][]*RawTool, rules *NamingRules) ([]*Entry, []string, error) {
	strategy := rules.Strategy
	if strategy == "" {
		strategy = StrategyPrefix
	}
	format := rules.PrefixFormat
	if format == "" {
		format = "{backend}_"
	}
	valid := validToolName
	if strings.Contains(format, ".") && strategy == StrategyPrefix {
		valid = validDottedToolName
	}
	var entries []*Entry
	var warnings []string
	claims := map[string][]*Entry{}
	var names []string
	for _, b := range order {
		br := rules.PerBackend[b]
		for _, t := range tools[b] {
			e := &Entry{Backend: b, Tool: t}
			entries = append(entries, e)
			if br != nil && (br.ExcludeAll || (len(br.Filter) > 0 && !contains(br.Filter, t.Name))) {
				continue
			}
			name := t.Name
			var ov Override
			if br != nil {
				ov = br.Overrides[t.Name]
			}
			switch {
			case ov.Name != "":
				name = ov.Name
			case strategy == StrategyPrefix:
				if strings.Contains(format, "{backend}") {
					name = strings.ReplaceAll(format, "{backend}", b) + t.Name
				} else {
					name = format + t.Name
				}
			}
			if !valid.MatchString(name) {
				clean := sanitize(name, valid == validDottedToolName)
				warnings = append(warnings, fmt.Sprintf("backend %q: tool name %q is not a valid MCP tool name; advertised as %q", b, name, clean))
				name = clean
			}
			e.Advertised = name
			e.JSON = rewriteTool(t.JSON, name, ov)
			if _, seen := claims[name]; !seen {
				names = append(names, name)
			}
			claims[name] = append(claims[name], e)
		}
	}
	var conflicts []Conflict
	sort.Strings(names)
	for _, name := range names {
		es := claims[name]
		if holder, ok := rules.Reserved[name]; ok {
			conflicts = append(conflicts, Conflict{Name: name, Backends: append(refs(es), holder), Why: " (a composite tool and a backend tool cannot share a name)"})
			for _, e := range es {
				e.Advertised = ""
			}
			continue
		}
		if len(es) < 2 {
			continue
		}
		switch strategy {
		case StrategyPriority:
			winner := -1
			for i, e := range es {
				if p := indexOf(rules.PriorityOrder, e.Backend); p >= 0 && (winner < 0 || p < indexOf(rules.PriorityOrder, es[winner].Backend)) {
					winner = i
				}
			}
			if winner < 0 {
				conflicts = append(conflicts, Conflict{Name: name, Backends: refs(es), Why: "; none of these backends is in priority_order"})
				continue
			}
			// Backends not in priority_order cannot lose silently to each
			// other, but lose to a listed one.
			for i, e := range es {
				if i != winner {
					e.Advertised = ""
				}
			}
		default:
			why := ""
			if strategy == StrategyManual {
				why = "; resolve it with an override (aggregation.tools[].overrides)"
			} else {
				why = "; the same name is produced twice (check overrides and prefix_format)"
			}
			conflicts = append(conflicts, Conflict{Name: name, Backends: refs(es), Why: why})
		}
	}
	if len(conflicts) > 0 {
		return entries, warnings, &ConflictError{Strategy: strategy, Conflicts: conflicts}
	}
	return entries, warnings, nil
}

func refs(es []*Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Ref()
	}
	sort.Strings(out)
	return out
}

// rewriteTool returns the tool object with name, description and
// annotations replaced, every other key byte-for-byte as the backend sent.
func rewriteTool(orig json.RawMessage, name string, ov Override) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(orig, &m); err != nil {
		m = map[string]json.RawMessage{}
	}
	m["name"], _ = json.Marshal(name)
	if ov.Description != "" {
		m["description"], _ = json.Marshal(ov.Description)
	}
	if len(ov.Annotations) > 0 {
		m["annotations"] = mergeObjects(m["annotations"], ov.Annotations)
	}
	b, _ := json.Marshal(m)
	return b
}

// mergeObjects overlays the keys of top onto base (both JSON objects).
func mergeObjects(base, top json.RawMessage) json.RawMessage {
	var mb, mt map[string]json.RawMessage
	_ = json.Unmarshal(base, &mb)
	if err := json.Unmarshal(top, &mt); err != nil {
		return base
	}
	if mb == nil {
		mb = map[string]json.RawMessage{}
	}
	for k, v := range mt {
		mb[k] = v
	}
	b, _ := json.Marshal(mb)
	return b
}

func sanitize(name string, dots bool) string {
	var b strings.Builder
	for _, r := range name {
		if r == '_' || r == '-' || (dots && r == '.') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		s = "_"
	}
	return s
}

func contains(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}
