package demo

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/catalog/demo.json from the demo servers' tool definitions")

const catalogPath = "../../testdata/catalog/demo.json"

// testdata/catalog/demo.json is what the demo servers advertise: same tools,
// schemas and annotations (JSON-equal), in Names() order. The Go
// definitions are the source; -update regenerates the file from them.
func TestCatalog(t *testing.T) {
	gen := catalogText()
	if *update {
		if err := os.WriteFile(catalogPath, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	adv := advertised(t)

	// The generator writes what the servers say.
	genRefs, genTools := catalogTools(t, "generated catalogue", gen)
	compareTools(t, "generated catalogue", genTools, adv)

	file, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	fileRefs, fileTools := catalogTools(t, catalogPath, file)
	compareTools(t, catalogPath, fileTools, adv)
	if !slices.Equal(fileRefs, genRefs) {
		t.Errorf("%s: tool order\n got %v\nwant %v", catalogPath, fileRefs, genRefs)
	}
	if t.Failed() {
		t.Log("if the Go definitions are right: go test ./backends/demo -run TestCatalog -update")
	}
}

// advertised returns each demo server's tools/list entries, as JSON values
// keyed "<backend>.<tool>", with a "backend" member added. It asks the
// server directly so that nothing is lost in client-side decoding.
func advertised(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, name := range Names() {
		srv, err := New(name)
		if err != nil {
			t.Fatal(err)
		}
		resp := srv.HandleMessage(t.Context(), json.RawMessage(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		raw, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		var msg struct {
			Result struct {
				Tools      []map[string]any `json:"tools"`
				NextCursor string           `json:"nextCursor"`
			} `json:"result"`
		}
		if err := json.Unmarshal(raw, &msg); err != nil || len(msg.Result.Tools) == 0 {
			t.Fatalf("%s: tools/list: %v: %s", name, err, raw)
		}
		if msg.Result.NextCursor != "" {
			t.Fatalf("%s: tools/list is paginated", name)
		}
		for _, tool := range msg.Result.Tools {
			tool["backend"] = name
			out[fmt.Sprint(name, ".", tool["name"])] = tool
		}
	}
	return out
}

// catalogTools decodes a catalogue file into its refs (in order) and its
// tools keyed by ref.
func catalogTools(t *testing.T, what string, data []byte) ([]string, map[string]any) {
	t.Helper()
	var doc struct {
		Tools []map[string]any `json:"tools"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var refs []string
	tools := map[string]any{}
	for _, tool := range doc.Tools {
		ref := fmt.Sprint(tool["backend"], ".", tool["name"])
		refs = append(refs, ref)
		tools[ref] = tool
	}
	return refs, tools
}

func compareTools(t *testing.T, what string, got, want map[string]any) {
	t.Helper()
	for ref, w := range want {
		g, ok := got[ref]
		if !ok {
			t.Errorf("%s: missing %s, which the demo servers advertise", what, ref)
			continue
		}
		if d := cmp.Diff(w, g); d != "" {
			t.Errorf("%s: %s differs from what the server advertises (-server +file):\n%s", what, ref, d)
		}
	}
	for ref := range got {
		if _, ok := want[ref]; !ok {
			t.Errorf("%s: %s is not advertised by any demo server", what, ref)
		}
	}
}

// catalogText renders the catalogue in the file's hand-written layout:
// schemas as written in the Go definitions, annotations on one line.
func catalogText() []byte {
	var b bytes.Buffer
	b.WriteString("{\n  \"tools\": [\n")
	sep := ""
	for _, name := range Names() {
		for _, tl := range build(name).tools {
			ann, err := json.Marshal(tl.annotations)
			if err != nil {
				panic(err)
			}
			b.WriteString(sep)
			sep = ",\n"
			fmt.Fprintf(&b, "    {\n      \"backend\": %s,\n      \"name\": %s,\n      \"description\": %s,\n      \"inputSchema\": %s,\n      \"outputSchema\": %s,\n      \"annotations\": %s\n    }",
				jsonString(name), jsonString(tl.name), jsonString(tl.description),
				strings.ReplaceAll(tl.input, "\n", "\n      "),
				strings.ReplaceAll(tl.output, "\n", "\n      "),
				spaced(ann))
		}
	}
	b.WriteString("\n  ]\n}\n")
	return b.Bytes()
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// spaced puts a space after every ':' and ',' of compact JSON that is not
// inside a string: {"a":1,"b":2} → {"a": 1, "b": 2}.
func spaced(compact []byte) string {
	var b strings.Builder
	inString, escaped := false, false
	for _, c := range string(compact) {
		b.WriteRune(c)
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ':' || c == ','):
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// The generated text is byte for byte the file as checked in, so -update
// is a no-op until a definition changes.
func TestCatalogUpToDate(t *testing.T) {
	file, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	if gen := catalogText(); !bytes.Equal(gen, file) {
		t.Errorf("%s is not laid out as the generator writes it (the content check is TestCatalog); run go test ./backends/demo -run TestCatalog -update\n%s",
			catalogPath, cmp.Diff(string(file), string(gen)))
	}
}
