package backends

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends/demo"
)

// A legacy SSE backend, with per-backend headers that reach it.
func TestSSEBackendWithHeaders(t *testing.T) {
	srv, err := demo.New("incidents")
	if err != nil {
		t.Fatal(err)
	}
	var gotAuth atomic.Value
	sse := mcpserver.NewSSEServer(srv)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			gotAuth.Store(a)
		}
		sse.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)

	m, err := NewManager([]Spec{{Name: "inc", URL: ts.URL + "/sse", Transport: "sse", Headers: map[string]string{"Authorization": "Bearer backend-secret"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if st := m.Status()[0]; st.State != StateReady || st.Transport != "sse" || st.Tools == 0 {
		t.Fatalf("status %+v", st)
	}
	res, err := m.CallTool(t.Context(), "inc", "get_incident", json.RawMessage(`{"id":"INC-1042"}`), nil)
	if err != nil || res.IsError || !strings.Contains(string(res.StructuredContent), "checkout") {
		t.Fatalf("call over SSE: %v %+v", err, res)
	}
	if a, _ := gotAuth.Load().(string); a != "Bearer backend-secret" {
		t.Fatalf("backend saw Authorization %q", a)
	}
}

// Consecutive failed calls open the circuit: calls then fail fast.
func TestCircuitBreaker(t *testing.T) {
	s := mcpserver.NewMCPServer("flaky", "1", mcpserver.WithToolCapabilities(true))
	var calls atomic.Int32
	s.AddTool(mcp.NewTool("boom"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		calls.Add(1)
		return nil, errors.New("internal failure")
	})
	m, err := NewManager([]Spec{{Name: "flaky", InProcess: s}}, &Options{Health: HealthPolicy{FailureThreshold: 2, OpenFor: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	for i := 0; i < 2; i++ {
		if _, err := m.CallTool(t.Context(), "flaky", "boom", nil, nil); err == nil || errors.Is(err, ErrUnavailable) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err = m.CallTool(t.Context(), "flaky", "boom", nil, nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "circuit open after 2 failed calls") {
		t.Fatalf("third call: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("the backend saw %d calls, want 2 (the third failed fast)", n)
	}
	if !m.Status()[0].CircuitOpen {
		t.Fatal("/status does not show the open circuit")
	}
}

// An HTTP backend's tools/list_changed reaches vmcp (on the standalone GET
// stream) and the new tool shows in the catalogue.
func TestHTTPBackendListChanged(t *testing.T) {
	s := mcpserver.NewMCPServer("grows", "1", mcpserver.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("first"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("1"), nil
	})
	ts := httptest.NewServer(mcpserver.NewStreamableHTTPServer(s))
	t.Cleanup(ts.Close)
	changed := make(chan struct{}, 16)
	m, err := NewManager([]Spec{{Name: "grows", URL: ts.URL}}, &Options{OnChange: func() { changed <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if n := len(m.Snapshot().Tools["grows"]); n != 1 {
		t.Fatalf("%d tools at start", n)
	}
	time.Sleep(200 * time.Millisecond) // let the GET stream open
	s.AddTool(mcp.NewTool("second"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("2"), nil
	})
	waitFor(t, 5*time.Second, func() bool { return len(m.Snapshot().Tools["grows"]) == 2 })
}

// Health checks reach a 2026-07-28 HTTP backend (which has no ping): one
// that stops answering becomes unhealthy, and healthy again once it
// answers.
func TestModernHTTPBackendHealth(t *testing.T) {
	s := mcpserver.NewMCPServer("modern", "1", mcpserver.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("t"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("ok"), nil
	})
	h := mcpserver.NewStreamableHTTPServer(s)
	var broken atomic.Bool
	var discovers atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mcp-Method") == "server/discover" {
			discovers.Add(1)
		}
		if broken.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	m, err := NewManager([]Spec{{Name: "modern", URL: ts.URL + "/mcp", ProtocolVersion: "2026-07-28"}}, &Options{Health: HealthPolicy{Interval: 20 * time.Millisecond, Timeout: time.Second, UnhealthyThreshold: 2}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if st := m.Status()[0]; st.State != StateReady {
		t.Fatalf("status %+v", st)
	}
	if v := m.byName["modern"].currentClient().ProtocolVersion(); !mcp.IsModernProtocol(v) {
		t.Fatalf("the backend speaks %q, want a 2026-07-28 connection for this test", v)
	}
	before := discovers.Load()
	waitFor(t, 10*time.Second, func() bool { return discovers.Load() >= before+2 })
	broken.Store(true)
	waitFor(t, 10*time.Second, func() bool { return m.Status()[0].State == StateUnhealthy })
	broken.Store(false)
	waitFor(t, 20*time.Second, func() bool { return m.Status()[0].State == StateReady })
}

// The circuit goes closed → open → half_open (the open period is over: a
// trial call goes out) → closed, and each change is reported once.
func TestCircuitHalfOpenReported(t *testing.T) {
	s := mcpserver.NewMCPServer("flaky", "1", mcpserver.WithToolCapabilities(true))
	var fail atomic.Bool
	fail.Store(true)
	s.AddTool(mcp.NewTool("boom"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if fail.Load() {
			return nil, errors.New("internal failure")
		}
		return mcp.NewToolResultText("ok"), nil
	})
	var (
		mu      sync.Mutex
		changes []string
	)
	m, err := NewManager([]Spec{{Name: "flaky", InProcess: s}}, &Options{
		Health: HealthPolicy{FailureThreshold: 1, OpenFor: 50 * time.Millisecond},
		OnStateChange: func(c StateChange) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, c.Backend+" "+c.Kind+" "+c.From+">"+c.To)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if st := m.Status()[0]; st.Circuit != CircuitClosed {
		t.Fatalf("circuit at start: %q", st.Circuit)
	}
	if _, err := m.CallTool(t.Context(), "flaky", "boom", nil, nil); err == nil {
		t.Fatal("failing call succeeded")
	}
	if st := m.Status()[0]; st.Circuit != CircuitOpen || !st.CircuitOpen {
		t.Fatalf("after a failure: %+v", st)
	}
	waitFor(t, 5*time.Second, func() bool { return m.Status()[0].Circuit == CircuitHalfOpen })
	fail.Store(false)
	if _, err := m.CallTool(t.Context(), "flaky", "boom", nil, nil); err != nil {
		t.Fatalf("trial call: %v", err)
	}
	if st := m.Status()[0]; st.Circuit != CircuitClosed {
		t.Fatalf("after the trial succeeded: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"flaky circuit closed>open", "flaky circuit open>half_open", "flaky circuit half_open>closed"}
	if strings.Join(changes, "|") != strings.Join(want, "|") {
		t.Fatalf("changes %q, want %q (the first connect is not a change)", changes, want)
	}
}
