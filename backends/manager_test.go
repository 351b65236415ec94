package backends

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/backends/demo"
)

// The test binary doubles as a stdio demo backend: with VMCP_TEST_DEMO set
// it serves that demo backend on stdin/stdout instead of running tests.
func TestMain(m *testing.M) {
	if name := os.Getenv("VMCP_TEST_DEMO"); name != "" {
		if err := demo.ServeStdio(context.Background(), name, os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func stdioDemo(t *testing.T, name string) Spec {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Name: name, Command: []string{exe}, Env: map[string]string{"VMCP_TEST_DEMO": name}}
}

func inProcessDemo(t *testing.T, name string) Spec {
	s, err := demo.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Name: name, InProcess: s}
}

type recordingRelay struct {
	mu    sync.Mutex
	notes []mcp.JSONRPCNotification
}

func (r *recordingRelay) Elicit(ctx context.Context, b string, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionDecline}}, nil
}
func (r *recordingRelay) CreateMessage(ctx context.Context, b string, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	return nil, context.Canceled
}
func (r *recordingRelay) ListRoots(ctx context.Context, b string, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	return &mcp.ListRootsResult{}, nil
}
func (r *recordingRelay) Notify(ctx context.Context, b string, n mcp.JSONRPCNotification) {
	r.mu.Lock()
	r.notes = append(r.notes, n)
	r.mu.Unlock()
}

func TestManagerCallsAndCatalogue(t *testing.T) {
	m, err := NewManager([]Spec{inProcessDemo(t, "incidents"), stdioDemo(t, "logs")}, &Options{Relay: &recordingRelay{}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if !m.Ready() {
		t.Fatal("not ready after Start")
	}
	snap := m.Snapshot()
	if strings.Join(snap.Order, ",") != "incidents,logs" {
		t.Fatalf("healthy backends %v (status %+v)", snap.Order, m.Status())
	}
	if len(snap.Tools["logs"]) == 0 || len(snap.Tools["incidents"]) == 0 {
		t.Fatalf("no tools: %+v", snap.Tools)
	}
	// Raw schemas survive byte-for-byte semantics (additionalProperties is
	// one of the keywords mcp-go's typed decoding drops).
	for _, tool := range snap.Tools["logs"] {
		if !strings.Contains(string(tool.InputSchema), "additionalProperties") {
			t.Errorf("logs.%s lost additionalProperties: %s", tool.Name, tool.InputSchema)
		}
	}
	for _, b := range []string{"incidents", "logs"} {
		tool := map[string]string{"incidents": "get_incident", "logs": "search"}[b]
		args := map[string]string{"incidents": `{"id":"INC-1042"}`, "logs": `{"service":"checkout","since":"1h","limit":5}`}[b]
		res, err := m.CallTool(t.Context(), b, tool, json.RawMessage(args), nil)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if res.IsError || len(res.StructuredContent) == 0 {
			t.Fatalf("%s: %+v", b, res)
		}
	}
	res, err := m.CallTool(t.Context(), "incidents", "get_incident", json.RawMessage(`{"id":"NOPE"}`), nil)
	if err != nil || !res.IsError {
		t.Fatalf("unknown incident: %v %+v", err, res)
	}
	if _, err := m.CallTool(t.Context(), "nope", "x", nil, nil); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

func TestStdioBackendRestartsAfterDeath(t *testing.T) {
	var mu sync.Mutex
	changes := 0
	m, err := NewManager([]Spec{stdioDemo(t, "logs")}, &Options{OnChange: func() { mu.Lock(); changes++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	pid := m.Status()[0].PID
	if pid == 0 {
		t.Fatalf("no pid: %+v", m.Status())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return m.Status()[0].State == StateUnhealthy || m.Status()[0].PID != pid })
	waitFor(t, 20*time.Second, func() bool {
		st := m.Status()[0]
		return st.State == StateReady && st.PID != 0 && st.PID != pid
	})
	if st := m.Status()[0]; st.Connects != 2 {
		t.Fatalf("connects %d, want 2", st.Connects)
	}
	if _, err := m.CallTool(t.Context(), "logs", "search", json.RawMessage(`{"service":"checkout","since":"1h","limit":1}`), nil); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	if !processGone(m.Status()[0].PID) && m.Status()[0].PID != 0 {
		t.Fatal("child left running after Close")
	}
}

func TestUnreachableBackendDoesNotStopOthers(t *testing.T) {
	m, err := NewManager([]Spec{
		{Name: "down", URL: "http://127.0.0.1:1/mcp"},
		{Name: "missing", Command: []string{"/nonexistent/backend"}},
		inProcessDemo(t, "chat"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	st := m.Status()
	if st[0].State != StateUnhealthy || st[1].State != StateUnhealthy || st[2].State != StateReady {
		t.Fatalf("%+v", st)
	}
	if !strings.Contains(st[1].LastError, "/nonexistent/backend") {
		t.Fatalf("error does not name the command: %q", st[1].LastError)
	}
	_, err = m.CallTool(t.Context(), "down", "x", nil, nil)
	if err == nil || !strings.Contains(err.Error(), `backend "down" is unhealthy`) {
		t.Fatalf("got %v", err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPerClientSessions(t *testing.T) {
	spec := stdioDemo(t, "tickets")
	spec.PerClient = true
	m, err := NewManager([]Spec{spec}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	create := func(ctx context.Context) string {
		res, err := m.CallTool(ctx, "tickets", "create", json.RawMessage(`{"title":"t","body":"b"}`), nil)
		if err != nil || res.IsError {
			t.Fatalf("create: %v %+v", err, res)
		}
		var out struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(res.StructuredContent, &out)
		return out.ID
	}
	a, b := WithClient(t.Context(), "client-a"), WithClient(t.Context(), "client-b")
	// Each client has its own backend process, so its own ticket numbering.
	if got := []string{create(a), create(a), create(b)}; strings.Join(got, ",") != "T-1,T-2,T-1" {
		t.Fatalf("ticket ids %v: sessions are shared", got)
	}
	if n := m.ClientSessions(); n != 2 {
		t.Fatalf("%d per-client sessions, want 2", n)
	}
	// No client key: the shared session.
	if id := create(t.Context()); id != "T-1" {
		t.Fatalf("shared session ticket %s", id)
	}
	m.CloseClient("client-a")
	if n := m.ClientSessions(); n != 1 {
		t.Fatalf("%d per-client sessions after CloseClient, want 1", n)
	}
	if id := create(a); id != "T-1" {
		t.Fatalf("a new session for client-a should start fresh, got %s", id)
	}
}
