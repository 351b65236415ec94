package backends

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// records keeps every log record a logger wrote, with its attributes.
type records struct {
	mu   sync.Mutex
	msgs []string
}

type recordsHandler struct {
	r     *records
	attrs []slog.Attr
}

func (h recordsHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordsHandler) Handle(_ context.Context, rec slog.Record) error {
	msg := rec.Level.String() + " " + rec.Message
	for _, a := range h.attrs {
		msg += " " + a.String()
	}
	h.r.mu.Lock()
	h.r.msgs = append(h.r.msgs, msg)
	h.r.mu.Unlock()
	return nil
}
func (h recordsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordsHandler{h.r, append(slices.Clone(h.attrs), as...)}
}
func (h recordsHandler) WithGroup(string) slog.Handler { return h }

// mcp-go's client transport logs through the manager's logger, naming
// the backend, not through slog.Default (where a gateway's log settings
// do not reach); its Info chatter is logged at Debug.
func TestTransportLogsThroughManagerLogger(t *testing.T) {
	s := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("echo"), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("ok"), nil
	})
	ts := httptest.NewServer(mcpserver.NewStreamableHTTPServer(s))
	t.Cleanup(ts.Close)
	got := &records{}
	m, err := NewManager([]Spec{{Name: "echo", URL: ts.URL + "/mcp", ProtocolVersion: "2025-11-25"}},
		&Options{Logger: slog.New(recordsHandler{r: got})})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	// The 2025-11-25 connection keeps a listening GET stream, which
	// mcp-go's transport announces at Info.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got.mu.Lock()
		found := slices.Contains(got.msgs, "DEBUG listening to server forever backend=echo")
		all := slices.Clone(got.msgs)
		got.mu.Unlock()
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the transport's log line did not reach the manager's logger; it has %q", all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
