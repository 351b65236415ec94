package engine

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Tool describes one backend tool as the compiler sees it. The catalogue
// (owned by package backends at run time, or a JSON file offline) hands
// these in; schemas stay raw JSON so no keyword is lost.
type Tool struct {
	// Backend is the backend's configured name.
	Backend string `json:"backend"`
	// Name is the backend's own name for the tool.
	Name string `json:"name"`
	// Advertised is the name clients see after aggregation ("" = not
	// advertised: hidden by filter/exclude_all, still callable from
	// workflows).
	Advertised   string           `json:"advertised,omitempty"`
	Description  string           `json:"description,omitempty"`
	InputSchema  json.RawMessage  `json:"inputSchema,omitempty"`
	OutputSchema json.RawMessage  `json:"outputSchema,omitempty"`
	Annotations  *ToolAnnotations `json:"annotations,omitempty"`
}

// Ref is the workflow reference form "<backend>.<name>".
func (t *Tool) Ref() string { return t.Backend + "." + t.Name }

// ToolAnnotations are MCP tool annotations; nil means "not stated".
type ToolAnnotations struct {
	Title           string `json:"title,omitempty"`
	ReadOnlyHint    *bool  `json:"readOnlyHint,omitempty"`
	DestructiveHint *bool  `json:"destructiveHint,omitempty"`
	IdempotentHint  *bool  `json:"idempotentHint,omitempty"`
	OpenWorldHint   *bool  `json:"openWorldHint,omitempty"`
}

// The MCP defaults for unstated hints.
func (a *ToolAnnotations) readOnly() bool {
	return a != nil && a.ReadOnlyHint != nil && *a.ReadOnlyHint
}
func (a *ToolAnnotations) idempotent() bool {
	return a != nil && a.IdempotentHint != nil && *a.IdempotentHint
}
func (a *ToolAnnotations) openWorld() bool {
	return a == nil || a.OpenWorldHint == nil || *a.OpenWorldHint
}
func (a *ToolAnnotations) destructive() bool {
	if a.readOnly() {
		return false
	}
	return a == nil || a.DestructiveHint == nil || *a.DestructiveHint
}

// Catalog resolves tool references for the compiler.
type Catalog interface {
	// Resolve finds a tool by "<backend>.<name>" or by advertised name.
	Resolve(ref string) (*Tool, bool)
	// Refs lists every resolvable reference (for did-you-mean).
	Refs() []string
}

// StaticCatalog is a Catalog over a fixed list of tools, as read from a
// catalogue JSON file ({"tools": [Tool…]}) for offline validation.
type StaticCatalog struct {
	tools []*Tool
	index map[string]*Tool
}

// NewStaticCatalog indexes tools by both reference forms. An advertised
// name that is also a "<backend>.<name>" of another tool resolves to the
// latter.
func NewStaticCatalog(tools []*Tool) *StaticCatalog {
	c := &StaticCatalog{tools: tools, index: make(map[string]*Tool, 2*len(tools))}
	for _, t := range tools {
		if t.Advertised != "" {
			c.index[t.Advertised] = t
		}
	}
	for _, t := range tools {
		c.index[t.Ref()] = t
	}
	return c
}

// LoadCatalogFile reads a catalogue JSON file: {"tools": [{backend, name,
// advertised?, inputSchema?, outputSchema?, annotations?}, …]}.
func LoadCatalogFile(path string) (*StaticCatalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Tools []*Tool `json:"tools"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, t := range doc.Tools {
		if t == nil || t.Backend == "" || t.Name == "" {
			return nil, fmt.Errorf("%s: tools[%d]: backend and name are required", path, i)
		}
	}
	return NewStaticCatalog(doc.Tools), nil
}

// Resolve implements Catalog.
func (c *StaticCatalog) Resolve(ref string) (*Tool, bool) {
	t, ok := c.index[ref]
	return t, ok
}

// Refs implements Catalog.
func (c *StaticCatalog) Refs() []string {
	out := make([]string, 0, len(c.index))
	for k := range c.index {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Tools returns the catalogue's tools in file order.
func (c *StaticCatalog) Tools() []*Tool { return c.tools }

// splitRef splits "<backend>.<name>" at the first dot.
func splitRef(ref string) (backend, name string, ok bool) {
	return strings.Cut(ref, ".")
}
