package dsl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/vmcp-dev/vmcp/schemas"
)

// Loader loads workflow and config files. It holds the compiled schemas:
// make one with NewLoader and reuse it to load many files. A Loader is safe
// for concurrent use. The package-level functions use a fresh Loader per
// call.
type Loader struct {
	workflow *jsonschema.Schema
	config   *jsonschema.Schema
	// raw holds the decoded schema documents by $id, to word diagnostics
	// (allowed keys, expected types, custom messages).
	raw map[string]any
	// order lists each schema's properties in the order the schema file
	// gives them, by schema location (see propertyOrder).
	order map[string][]string
	// compiled indexes the compiled schemas by location, to evaluate the
	// conditional branches that apply to a value.
	compiled map[string]*jsonschema.Schema
}

// NewLoader compiles the embedded schemas. It fails only if they are broken,
// which a test rules out.
func NewLoader() (*Loader, error) {
	wf, cfg, err := schemas.Compile()
	if err != nil {
		return nil, err
	}
	return newLoaderWith(wf, cfg)
}

func newLoaderWith(wf, cfg *jsonschema.Schema) (*Loader, error) {
	l := &Loader{workflow: wf, config: cfg, raw: map[string]any{}, order: map[string][]string{}, compiled: map[string]*jsonschema.Schema{}}
	for id, text := range map[string][]byte{schemas.WorkflowID: schemas.Workflow, schemas.ConfigID: schemas.Config} {
		var doc any
		if err := json.Unmarshal(text, &doc); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", id, err)
		}
		l.raw[id] = doc
		if err := propertyOrder(id, text, l.order); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", id, err)
		}
	}
	indexSchemas(wf, l.compiled)
	indexSchemas(cfg, l.compiled)
	return l, nil
}

// propertyOrder records, for every schema object in a schema document that
// has "properties", their names in file order, under the schema's location
// (id#/json/pointer, as jsonschema writes locations).
func propertyOrder(id string, text []byte, order map[string][]string) error {
	dec := json.NewDecoder(bytes.NewReader(text))
	var walk func(path []string) error
	walk = func(path []string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			var keys []string
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				keys = append(keys, k)
				if err := walk(append(slices.Clip(path), k)); err != nil {
					return err
				}
			}
			// A "properties" keyword (not a property named "properties").
			if n := len(path); n > 0 && path[n-1] == "properties" && (n < 2 || path[n-2] != "properties") {
				order[id+"#"+pointerURL(path[:n-1])] = keys
			}
			_, err = dec.Token() // '}'
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(append(slices.Clip(path), strconv.Itoa(i))); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ']'
			return err
		}
		return nil
	}
	return walk(nil)
}

// pointerURL writes a JSON pointer the way jsonschema writes schema
// locations: each token escaped for JSON pointers, then for URLs.
func pointerURL(path []string) string {
	var b strings.Builder
	for _, t := range path {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(escapeToken(t)))
	}
	return b.String()
}

// indexSchemas adds s and every schema reachable from it to byLoc.
func indexSchemas(s *jsonschema.Schema, byLoc map[string]*jsonschema.Schema) {
	if s == nil || byLoc[s.Location] == s {
		return
	}
	byLoc[s.Location] = s
	for _, sub := range []*jsonschema.Schema{s.Ref, s.Not, s.If, s.Then, s.Else, s.Items2020, s.PropertyNames, s.Contains} {
		indexSchemas(sub, byLoc)
	}
	for _, list := range [][]*jsonschema.Schema{s.AllOf, s.AnyOf, s.OneOf, s.PrefixItems} {
		for _, sub := range list {
			indexSchemas(sub, byLoc)
		}
	}
	for _, sub := range s.Properties {
		indexSchemas(sub, byLoc)
	}
	for _, sub := range s.PatternProperties {
		indexSchemas(sub, byLoc)
	}
	for _, sub := range s.DependentSchemas {
		indexSchemas(sub, byLoc)
	}
	if sub, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
		indexSchemas(sub, byLoc)
	}
	if sub, ok := s.Items.(*jsonschema.Schema); ok {
		indexSchemas(sub, byLoc)
	}
}

// newLoader is NewLoader for the package-level functions, which report a
// broken embedded schema as a diagnostic rather than panicking. Without
// withConfig it compiles only the workflow schema, which is quicker.
func newLoader(name string, withConfig bool) (*Loader, Diagnostics) {
	var l *Loader
	var err error
	if withConfig {
		l, err = NewLoader()
	} else {
		var wf *jsonschema.Schema
		if wf, err = schemas.CompileWorkflow(); err == nil {
			l, err = newLoaderWith(wf, nil)
		}
	}
	if err != nil {
		return nil, Diagnostics{{Pos: Pos{File: name}, Msg: "internal error: " + err.Error()}}
	}
	return l, nil
}

// LoadWorkflow parses, validates and decodes one workflow file. name is the
// file name used in positions. The workflow is nil only when the file is not
// a YAML mapping; when diagnostics are returned it may be incomplete. The
// diagnostics are sorted.
//
// Each call compiles the workflow schema (a few milliseconds); to load many
// files, make a Loader.
func LoadWorkflow(name string, data []byte) (*Workflow, Diagnostics) {
	l, ds := newLoader(name, false)
	if l == nil {
		return nil, ds
	}
	return l.LoadWorkflow(name, data)
}

// LoadWorkflowFile reads and loads a workflow file.
func LoadWorkflowFile(path string) (*Workflow, Diagnostics) {
	l, ds := newLoader(path, false)
	if l == nil {
		return nil, ds
	}
	return l.LoadWorkflowFile(path)
}

// LoadWorkflowFile reads and loads a workflow file; see LoadWorkflow.
func (l *Loader) LoadWorkflowFile(path string) (*Workflow, Diagnostics) {
	data, d, ok := readFile(path)
	if !ok {
		return nil, Diagnostics{d}
	}
	return l.LoadWorkflow(path, data)
}

// LoadWorkflow parses, validates and decodes one workflow file; see the
// package-level LoadWorkflow.
func (l *Loader) LoadWorkflow(name string, data []byte) (*Workflow, Diagnostics) {
	if l == nil || l.workflow == nil {
		return nil, Diagnostics{{Pos: Pos{File: name}, Msg: "internal error: dsl.Loader used without NewLoader"}}
	}
	src := NewSource(name, data)
	var ds Diagnostics
	root := parseDocument(src, "workflow", &ds)
	if root == nil {
		finish(src, &ds)
		return nil, ds
	}
	v := newVerifier(l, src, root, workflowEntities(), &ds)
	v.validate(l.workflow)
	wf := &Workflow{}
	decodeStruct(root, reflect.ValueOf(wf).Elem())
	wf.Src = src
	checkWorkflow(wf, &ds)
	finish(src, &ds)
	return wf, ds
}

// finish moves positions that yaml.v3 puts past the end of the file (at
// EOF after the last line break) onto the last line, and sorts.
func finish(src *Source, ds *Diagnostics) {
	last := len(src.lines)
	for i, d := range *ds {
		if d.Pos.File == src.Name && d.Pos.Line > last {
			d.Pos = Pos{File: src.Name, Line: last, Col: utf8.RuneCountInString(src.Line(last)) + 1}
			d.Text = src.Line(last)
			(*ds)[i] = d
		}
	}
	ds.Sort()
}

// readFile reads a file, turning an error into a file-level diagnostic.
func readFile(path string) ([]byte, Diagnostic, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return nil, Diagnostic{Pos: Pos{File: path}, Msg: "cannot read file: " + msg}, false
	}
	return data, Diagnostic{}, true
}

// Limits on what a document may expand to (aliases included).
const (
	maxDocNodes = 1 << 18
)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument parses exactly one YAML document whose root is a mapping,
// and checks what the JSON data model cannot express (duplicate keys,
// non-string keys, merge keys, alias bombs). It returns the root mapping, or
// nil after reporting why there is none. what names the file kind in
// messages ("workflow", "config").
func parseDocument(src *Source, what string, ds *Diagnostics) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(src.Data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			example := "name: …, steps: …"
			if what == "config" {
				example = "backends: …"
			}
			if onlyComments(src.Data) {
				ds.Add(src, Pos{File: src.Name}, "the file has no %s in it (only comments); a %s file is a YAML mapping (%s)", what, what, example)
			} else {
				ds.Add(src, Pos{File: src.Name}, "the file is empty; a %s file is a YAML mapping (%s)", what, example)
			}
			return nil
		}
		addYAMLError(src, err, ds)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil && !isNull(resolve(&extra)) {
		p := src.NodePos(&extra)
		if extra.Kind == yaml.DocumentNode && len(extra.Content) > 0 {
			p = src.NodePos(extra.Content[0])
		}
		if p.Line > 0 {
			// Point at the "---" that starts the second document if we can.
			for l := p.Line; l >= 1; l-- {
				if strings.HasPrefix(src.Line(l), "---") {
					p = Pos{File: src.Name, Line: l, Col: 1}
					break
				}
			}
		}
		if !p.IsValid() {
			p = Pos{File: src.Name, Line: 1, Col: 1}
		}
		ds.Add(src, p, "a %s file holds one YAML document; remove this second one (or the \"---\" separator)", what)
	} else if err != nil && !errors.Is(err, io.EOF) {
		addYAMLError(src, err, ds)
	}
	root := resolve(&doc)
	if root == nil || isNull(root) {
		p := Pos{File: src.Name}
		if root != nil && root.Line > 0 {
			p = src.NodePos(root)
		}
		ds.Add(src, p, "the file has no content; a %s file is a YAML mapping", what)
		return nil
	}
	if root.Kind != yaml.MappingNode {
		ds.Add(src, src.NodePos(root), "a %s file must be a YAML mapping (key: value), not %s", what, describeNode(root))
		return nil
	}
	if !checkNodes(src, root, ds) {
		return nil // converting it would be the alias bomb itself
	}
	return root
}

// addYAMLError turns a yaml.v3 syntax error into a diagnostic. yaml.v3
// reports only a line ("yaml: line 7: …"), and for parser (as opposed to
// scanner) errors that line is 0-based and names where the enclosing
// collection starts; both are corrected here. The column is the line's first
// non-blank character, or for a flow collection that is not closed its
// opening bracket; a tab in the indentation is pointed at. A few errors
// without a line are located by hand.
func addYAMLError(src *Source, err error, ds *Diagnostics) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	hint, parser := parserProblem(msg)
	if parser {
		line++ // 0-based; a missing line means line 0
	}
	known := line > 0
	if !known {
		line = 1 // yaml.v3 omits line 0
	}
	line = min(line, max(len(src.lines), 1))
	text := src.Line(line)
	p := Pos{File: src.Name, Line: line, Col: src.indent(line) + 1}
	switch {
	case strings.HasPrefix(msg, "found a tab character"):
		// The scanner names the line before the tab, or the block's.
		if tl, tc, ok := findIndentTab(src, line); ok {
			p = Pos{File: src.Name, Line: tl, Col: tc}
		}
		hint = " (indent with spaces, not tabs)"
	case msg == "found character that cannot start any token":
		if c, what, ok := badTokenStart(text); ok {
			p.Col = c
			hint = what
		}
	case msg == "mapping values are not allowed in this context":
		hint = " (check this line's indentation, or quote a value that contains ': ')"
	case msg == "did not find expected ',' or '}'":
		if c, ok := unclosedBracket(text, '{', '}'); ok {
			p.Col = c
		}
	case msg == "did not find expected ',' or ']'":
		if c, ok := unclosedBracket(text, '[', ']'); ok {
			p.Col = c
		}
	case known:
	case strings.Contains(msg, "max depth"):
		p = Pos{File: src.Name}
	case strings.HasPrefix(msg, "unknown anchor '"):
		name := strings.TrimSuffix(strings.TrimPrefix(msg, "unknown anchor '"), "' referenced")
		if i := bytes.Index(src.Data, []byte("*"+name)); i >= 0 {
			p = offsetToPos(src, i)
		}
	case strings.Contains(msg, "UTF-8") || strings.Contains(msg, "utf-8") || strings.Contains(msg, "invalid Unicode"):
		if i := firstInvalidUTF8(src.Data); i >= 0 {
			p = offsetToPos(src, i)
		}
	case strings.Contains(msg, "control characters"):
		if i := bytes.IndexFunc(src.Data, func(r rune) bool {
			return r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f
		}); i >= 0 {
			p = offsetToPos(src, i)
		}
	}
	ds.Add(src, p, "YAML syntax error: %s%s", msg, hint)
}

// badTokenStart finds, in one line, the character the scanner could not
// start a token with: a tab in the indentation, or a reserved @ or ` at
// the start of a value. It returns its column and a hint.
func badTokenStart(line string) (int, string, bool) {
	rs := []rune(line)
	for i, r := range rs {
		if r == '\t' {
			return i + 1, " (a tab: indent with spaces, not tabs)", true
		}
		if r != ' ' {
			break
		}
	}
	for i, r := range rs {
		if r != '@' && r != '`' {
			continue
		}
		j := i - 1
		for j >= 0 && rs[j] == ' ' {
			j--
		}
		if j < 0 || (j < i-1 && strings.ContainsRune(":-,[{?", rs[j])) || strings.ContainsRune("[{,", rs[j]) {
			return i + 1, " (" + string(r) + " cannot start a plain value: quote it)", true
		}
	}
	return 0, "", false
}

// parserProblem reports whether msg is one of the libyaml parser's
// problems (their line is 0-based), with a hint on where to look.
func parserProblem(msg string) (string, bool) {
	switch msg {
	case "did not find expected key", "did not find expected '-' indicator":
		return " (in the block that starts here: check the indentation of the lines below)", true
	case "did not find expected ',' or ']'":
		return " (the [ … ] list that starts here is not closed, or lacks a comma)", true
	case "did not find expected ',' or '}'":
		return " (the { … } mapping that starts here is not closed, or lacks a comma)", true
	case "did not find expected node content", "did not find expected <document start>",
		"did not find expected <stream-start>", "found duplicate %YAML directive",
		"found duplicate %TAG directive", "found incompatible YAML document",
		"found undefined tag handle":
		return "", true
	}
	return "", false
}

// onlyComments reports whether a file that holds no YAML document has
// something other than blanks in it (comments, or a document end marker).
func onlyComments(data []byte) bool {
	for _, l := range splitLines(data) {
		if t := strings.TrimSpace(string(l)); strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// findIndentTab finds the first tab in the indentation of a line, from
// line on (then from the top): its line and column.
func findIndentTab(src *Source, line int) (int, int, bool) {
	find := func(from, to int) (int, int, bool) {
		for l := from; l <= to; l++ {
			for i, r := range src.Line(l) {
				if r == '\t' {
					return l, utf8.RuneCountInString(src.Line(l)[:i]) + 1, true
				}
				if r != ' ' && r != '-' {
					break
				}
			}
		}
		return 0, 0, false
	}
	if l, c, ok := find(line, len(src.lines)); ok {
		return l, c, true
	}
	return find(1, line-1)
}

// unclosedBracket finds, in one line, the last open bracket that the line
// does not close (skipping quoted strings and a trailing comment): the
// flow collection the parser reports as not closed. It returns the
// bracket's column.
func unclosedBracket(line string, open, close rune) (int, bool) {
	var stack []int // columns of open brackets of either kind, negated for the other kind
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '"', '\'':
			if i > 0 && !strings.ContainsRune(" \t{[,:", rs[i-1]) {
				continue // inside a plain scalar (it's)
			}
			// Skip a quoted scalar ("" with \ escapes, '' with '' escapes).
			for i++; i < len(rs); i++ {
				if r == '"' && rs[i] == '\\' {
					i++
					continue
				}
				if rs[i] == r {
					if r == '\'' && i+1 < len(rs) && rs[i+1] == '\'' {
						i++
						continue
					}
					break
				}
			}
		case '#':
			if i == 0 || rs[i-1] == ' ' || rs[i-1] == '\t' {
				i = len(rs)
			}
		case '{', '[':
			col := i + 1
			if r != open {
				col = -col
			}
			stack = append(stack, col)
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
	for j := len(stack) - 1; j >= 0; j-- {
		if stack[j] > 0 {
			return stack[j], true
		}
	}
	return 0, false
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return -1
}

// offsetToPos converts a byte offset in the file to a line and column
// (line breaks as yaml.v3 counts them).
func offsetToPos(src *Source, off int) Pos {
	line, start := 1, 0
	for i := 0; i < off; {
		if n := lineBreakLen(src.Data[i:]); n > 0 {
			i += n
			line, start = line+1, i
			continue
		}
		i++
	}
	return Pos{File: src.Name, Line: line, Col: utf8.RuneCount(src.Data[start:max(off, start)]) + 1}
}

// checkNodes reports, for the whole tree: duplicate keys, keys that are not
// strings, merge keys, aliases that refer to their own anchor, nesting
// deeper than NodeValue allows, and documents that aliases expand beyond
// maxDocNodes (then it returns false and the document must not be used).
func checkNodes(src *Source, root *yaml.Node, ds *Diagnostics) bool {
	c := &nodeChecker{src: src, ds: ds, active: map[*yaml.Node]bool{}, size: map[*yaml.Node]int{}}
	c.walk(root, 0)
	if c.expanded > maxDocNodes {
		ds.Add(src, src.NodePos(root), "the document is too large once aliases are expanded (more than %d values)", maxDocNodes)
		return false
	}
	return true
}

type nodeChecker struct {
	src      *Source
	ds       *Diagnostics
	active   map[*yaml.Node]bool // nodes being walked (to find alias cycles)
	size     map[*yaml.Node]int  // expanded size of anchored nodes already walked
	expanded int
	deep     bool
}

// walk returns the expanded size of n.
func (c *nodeChecker) walk(n *yaml.Node, depth int) int {
	if n == nil {
		return 0
	}
	if depth > maxNodeDepth {
		if !c.deep {
			c.deep = true
			c.ds.Add(c.src, c.src.NodePos(n), "value nested deeper than %d levels", maxNodeDepth)
		}
		return 1
	}
	switch n.Kind {
	case yaml.AliasNode:
		t := n.Alias
		if t == nil {
			return 1
		}
		if c.active[t] {
			c.ds.Add(c.src, c.src.NodePos(n), "alias *%s refers to a value that contains it", n.Value)
			return 1
		}
		if s, ok := c.size[t]; ok {
			c.expanded += s
			return s
		}
		// An alias whose anchor comes later (or is a cycle) was already
		// reported by the parser; walk it for its size.
		return c.walk(t, depth+1)
	case yaml.MappingNode, yaml.SequenceNode, yaml.DocumentNode:
		if c.expanded > maxDocNodes {
			return 1
		}
		c.active[n] = true
		defer delete(c.active, n)
		start := c.expanded
		c.expanded++
		if n.Kind == yaml.MappingNode {
			c.checkKeys(n)
		}
		total := 1
		for _, ch := range n.Content {
			total += c.walk(ch, depth+1)
		}
		if n.Anchor != "" {
			c.size[n] = c.expanded - start
		}
		return total
	default:
		c.expanded++
		return 1
	}
}

func (c *nodeChecker) checkKeys(n *yaml.Node) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		rk := resolve(k)
		switch {
		case rk == nil || rk.Kind != yaml.ScalarNode:
			c.ds.Add(c.src, c.src.NodePos(k), "mapping keys must be strings, not %s", describeNode(rk))
			continue
		case rk.Tag == "!!merge":
			c.ds.Add(c.src, c.src.NodePos(k), "merge keys (<<) are not supported; write the keys out")
			continue
		}
		if first, dup := seen[rk.Value]; dup {
			c.ds.Add(c.src, c.src.NodePos(k), "duplicate key %q (first defined at line %d)", rk.Value, first.Line)
			continue
		}
		seen[rk.Value] = k
	}
}

// describeNode names a node's kind for messages.
func describeNode(n *yaml.Node) string {
	n = resolve(n)
	switch {
	case n == nil:
		return "nothing"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case isNull(n):
		return "an empty value"
	case n.Kind == yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "the string " + quoteValue(n.Value)
		case "!!bool":
			return "the boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		return quoteValue(n.Value)
	}
	return "an unsupported YAML value"
}

// quoteValue quotes a string for a message, shortened when long.
func quoteValue(s string) string {
	const max = 40
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return strconv.Quote(s)
}
