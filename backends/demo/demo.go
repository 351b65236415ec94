package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// serverVersion is what the demo servers report in initialize.
const serverVersion = "1.0.0"

// now is the demo's "current time": every read-only answer is computed
// relative to it, and writes are stamped with times after it (see clock).
var now = nov(25, 10, 0, 0)

// Names returns the names of the demo backends, in catalogue order.
func Names() []string {
	return []string{"incidents", "logs", "metrics", "deploys", "chat", "tickets"}
}

// Options tune a demo server for tests; nil is valid and every zero value
// means off. Keys are tool references "<backend>.<tool>" (e.g.
// "logs.search"), so one Options can be handed to every backend.
type Options struct {
	// Delay is artificial latency per tool: a call waits this long before
	// it runs. A cancelled request ends the wait with a request error (not
	// a tool result).
	Delay map[string]time.Duration
	// Fail makes the first Fail[ref] calls of a tool (after any Delay)
	// return a tool error (isError: true) without running; later calls run
	// normally. Every call counts, whatever its arguments. Counts are per
	// server: each New starts afresh.
	Fail map[string]int
}

// New returns a fresh demo MCP server for the named backend (one of
// Names()), with its own in-memory state.
func New(name string) (*server.MCPServer, error) {
	return NewWithOptions(name, nil)
}

// NewWithOptions is New with test options (nil is valid). It fails for an
// unknown backend name or an Options key that names no demo tool.
func NewWithOptions(name string, opts *Options) (*server.MCPServer, error) {
	b := build(name)
	if b == nil {
		return nil, fmt.Errorf("unknown demo backend %q: valid names are %s", name, strings.Join(Names(), ", "))
	}
	if opts == nil {
		opts = &Options{}
	}
	if err := checkOptionKeys(opts); err != nil {
		return nil, err
	}
	srv := server.NewMCPServer("vmcp-demo-"+name, serverVersion,
		server.WithToolCapabilities(false),
		server.WithInstructions(b.instructions),
		server.WithRecovery(),
		server.WithOutputSchemaValidation(),
	)
	f := &faults{delay: maps.Clone(opts.Delay), fail: maps.Clone(opts.Fail)}
	st := make([]server.ServerTool, len(b.tools))
	for i, t := range b.tools {
		st[i] = server.ServerTool{Tool: t.mcpTool(), Handler: f.wrap(b.name+"."+t.name, t.run)}
	}
	srv.AddTools(st...)
	return srv, nil
}

// build returns a fresh backend with its seed data, or nil.
func build(name string) *backend {
	switch name {
	case "incidents":
		return newIncidents()
	case "logs":
		return newLogs()
	case "metrics":
		return newMetrics()
	case "deploys":
		return newDeploys()
	case "chat":
		return newChat()
	case "tickets":
		return newTickets()
	}
	return nil
}

// checkOptionKeys rejects Delay and Fail keys that name no demo tool, so a
// typo in a test does not silently disable the fault.
func checkOptionKeys(opts *Options) error {
	known := map[string]bool{}
	for _, n := range Names() {
		for _, t := range build(n).tools {
			known[n+"."+t.name] = true
		}
	}
	var bad []string
	for ref := range opts.Delay {
		if !known[ref] {
			bad = append(bad, "Delay["+ref+"]")
		}
	}
	for ref, n := range opts.Fail {
		if !known[ref] {
			bad = append(bad, "Fail["+ref+"]")
		} else if n < 0 {
			return fmt.Errorf("demo options: Fail[%s] is negative", ref)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("demo options: %s: not a demo tool (want \"<backend>.<tool>\", e.g. \"logs.search\")", strings.Join(bad, ", "))
	}
	return nil
}

// backend is one demo backend: its tools, whose handlers close over the
// backend's state.
type backend struct {
	name         string
	instructions string
	tools        []*tool
}

// tool is one demo tool. The schemas are JSON text laid out as in
// testdata/catalog/demo.json (which is generated from them).
type tool struct {
	name        string
	description string
	input       string
	output      string
	annotations mcp.ToolAnnotation
	// run handles a call's raw arguments and returns the structured output
	// (marshalled with encoding/json) or an error, which becomes a tool
	// error result with the error's text.
	run func(ctx context.Context, args json.RawMessage) (any, error)
}

func (t *tool) mcpTool() mcp.Tool {
	return mcp.Tool{
		Name:            t.name,
		Description:     t.description,
		RawInputSchema:  json.RawMessage(t.input),
		RawOutputSchema: json.RawMessage(t.output),
		Annotations:     t.annotations,
	}
}

// hint is an annotation hint's value.
func hint(b bool) *bool { return &b }

// readOnly is the annotation set of a read-only tool of a closed world.
func readOnly(title string) mcp.ToolAnnotation {
	return mcp.ToolAnnotation{Title: title, ReadOnlyHint: hint(true), IdempotentHint: hint(true), OpenWorldHint: hint(false)}
}

// writes is the annotation set of a tool that changes state and is not
// idempotent.
func writes(title string, destructive, openWorld bool) mcp.ToolAnnotation {
	return mcp.ToolAnnotation{Title: title, ReadOnlyHint: hint(false), DestructiveHint: hint(destructive), IdempotentHint: hint(false), OpenWorldHint: hint(openWorld)}
}

// faults applies Options.Delay and Options.Fail to every call.
type faults struct {
	delay map[string]time.Duration // read-only after New
	mu    sync.Mutex
	fail  map[string]int // remaining failures per ref
	seen  map[string]int // failures injected so far per ref
}

// take reports whether this call of ref must fail, and which failure it is.
func (f *faults) take(ref string) (int, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[ref] <= 0 {
		return 0, 0, false
	}
	if f.seen == nil {
		f.seen = map[string]int{}
	}
	f.fail[ref]--
	f.seen[ref]++
	return f.seen[ref], f.seen[ref] + f.fail[ref], true
}

// wrap turns a tool's run function into an mcp-go handler: faults first,
// then the call; results carry the output both as structuredContent and as
// a text item with the same JSON.
func (f *faults) wrap(ref string, run func(context.Context, json.RawMessage) (any, error)) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if d := f.delay[ref]; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		if i, n, ok := f.take(ref); ok {
			return mcp.NewToolResultError(fmt.Sprintf("injected failure %d of %d for %s (demo Options.Fail)", i, n, ref)), nil
		}
		args, err := rawArguments(req)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		out, err := run(ctx, args)
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return jsonResult(out)
	}
}

// rawArguments returns the call's arguments as JSON text ({} when absent).
func rawArguments(req mcp.CallToolRequest) (json.RawMessage, error) {
	raw := req.Params.RawArguments
	if len(bytes.TrimSpace(raw)) == 0 && req.Params.Arguments != nil {
		b, err := json.Marshal(req.Params.Arguments)
		if err != nil {
			return nil, fmt.Errorf("invalid arguments: %v", err)
		}
		raw = b
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return json.RawMessage("{}"), nil
	}
	return raw, nil
}

// jsonResult is a successful result: out as structuredContent plus one
// text item with the same JSON.
func jsonResult(out any) (*mcp.CallToolResult, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return &mcp.CallToolResult{
		Content:           []mcp.Content{mcp.NewTextContent(string(b))},
		StructuredContent: json.RawMessage(b),
	}, nil
}

// clock stamps writes: the n-th write of a backend happens n minutes after
// now, so timestamps are deterministic and ordered.
type clock struct{ n int }

// tick returns the next write time; callers hold their backend's lock.
func (c *clock) tick() string {
	c.n++
	return stamp(now.Add(time.Duration(c.n) * time.Minute))
}

// stamp formats a time as RFC 3339 in UTC, to the second.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// nov is a seed time: day d of November 2026, h:m:s UTC.
func nov(d, h, m, sec int) time.Time { return time.Date(2026, 11, d, h, m, sec, 0, time.UTC) }

// knownList renders "a, b, c" for error messages.
func knownList(names []string) string {
	s := slices.Clone(names)
	sort.Strings(s)
	return strings.Join(s, ", ")
}
