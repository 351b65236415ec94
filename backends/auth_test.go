package backends

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/backends/demo"
	"github.com/vmcp-dev/vmcp/backends/outauth"
)

type seenRequest struct {
	auth, service, body string
}

// A pass_through backend over SSE: calls carry the caller's token on the
// caller's own session; the shared session (connect, catalogue, health
// checks) carries only the service header.
func TestPassThroughAndServiceCredentials(t *testing.T) {
	srv, err := demo.New("incidents")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []seenRequest
	sse := mcpserver.NewSSEServer(srv)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		mu.Lock()
		seen = append(seen, seenRequest{r.Header.Get("Authorization"), r.Header.Get("X-Service"), string(body)})
		mu.Unlock()
		sse.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	requests := func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), seen...)
	}

	auth, err := outauth.New(outauth.Config{Backend: "inc", Type: outauth.PassThrough, Headers: map[string]outauth.Secret{"X-Service": "svc-key"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager([]Spec{{Name: "inc", URL: ts.URL + "/sse", Transport: "sse", Auth: auth,
		// The 2025-11-25 era, whose pings go over the wire (mcp-go answers
		// a 2026-07-28 ping locally).
		ProtocolVersion: "2025-11-25"}},
		&Options{Health: HealthPolicy{Interval: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(t.Context())
	t.Cleanup(func() { _ = m.Close() })
	if st := m.Status()[0]; st.State != StateReady || st.Tools == 0 {
		t.Fatalf("status %+v", st)
	}

	// Without a caller token the call is refused, naming the backend.
	_, err = m.CallTool(t.Context(), "inc", "get_incident", json.RawMessage(`{"id":"INC-1042"}`), nil)
	if !errors.Is(err, outauth.ErrNoCallerToken) || !strings.Contains(err.Error(), `backend "inc"`) {
		t.Fatalf("call without a caller: %v", err)
	}
	ctx := outauth.WithSubject(t.Context(), outauth.Subject{Principal: "alice", Token: "alice-token"})
	res, err := m.CallTool(ctx, "inc", "get_incident", json.RawMessage(`{"id":"INC-1042"}`), nil)
	if err != nil || res.IsError {
		t.Fatalf("call as alice: %v %+v", err, res)
	}
	if m.ClientSessions() != 1 {
		t.Fatalf("%d per-principal sessions, want 1", m.ClientSessions())
	}
	// Wait for health checks on the shared session after alice's call.
	before := len(requests())
	waitFor(t, 10*time.Second, func() bool {
		n := 0
		for _, r := range requests()[before:] {
			if strings.Contains(r.body, `"ping"`) {
				n++
			}
		}
		return n >= 2
	})
	calls, pings, serviceLists := 0, 0, 0
	for _, r := range requests() {
		if r.service != "svc-key" {
			t.Errorf("a request without the service header: %+v", r)
		}
		switch {
		case strings.Contains(r.body, `"tools/call"`):
			calls++
			if r.auth != "Bearer alice-token" {
				t.Errorf("alice's call carried %q", r.auth)
			}
		case strings.Contains(r.body, `"ping"`):
			pings++
			if r.auth != "" {
				t.Errorf("a health check carried a user's token: %q", r.auth)
			}
		case strings.Contains(r.body, `"tools/list"`) && r.auth == "":
			serviceLists++ // the shared session's catalogue
		}
	}
	if calls != 1 || pings < 2 || serviceLists == 0 {
		t.Fatalf("%d calls, %d pings, %d catalogue listings with service credentials", calls, pings, serviceLists)
	}

	// Idle per-principal sessions are closed; a later call opens a new one.
	if n := m.reapIdle(time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("reaped %d sessions used within the hour", n)
	}
	if n := m.reapIdle(time.Now().Add(time.Second)); n != 1 || m.ClientSessions() != 0 {
		t.Fatalf("reaped %d, %d sessions left", n, m.ClientSessions())
	}
	if _, err := m.CallTool(ctx, "inc", "get_incident", json.RawMessage(`{"id":"INC-1042"}`), nil); err != nil || m.ClientSessions() != 1 {
		t.Fatalf("call after reaping: %v, %d sessions", err, m.ClientSessions())
	}
}

func TestAuthStrategiesTheBackendCannotCarry(t *testing.T) {
	pt, _ := outauth.New(outauth.Config{Backend: "s", Type: outauth.PassThrough}, nil)
	_, err := NewManager([]Spec{{Name: "s", Command: []string{"cat"}, Auth: pt}}, nil)
	if err == nil || !strings.Contains(err.Error(), `backend "s": outgoing_auth pass_through sends HTTP headers, and this backend is stdio`) {
		t.Fatalf("got %v", err)
	}
	// error applies to every kind: never connected, refused by name.
	refuse, _ := outauth.New(outauth.Config{Backend: "s", Type: outauth.Refuse}, nil)
	m, err := NewManager([]Spec{{Name: "s", Command: []string{"definitely-not-run"}, Auth: refuse}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	t.Cleanup(func() { _ = m.Close() })
	st := m.Status()[0]
	if st.State != StateUnhealthy || st.Connects != 0 || !strings.Contains(st.LastError, "outgoing_auth error") || st.Auth != "error" {
		t.Fatalf("status %+v", st)
	}
	if _, err := m.CallTool(t.Context(), "s", "x", nil, nil); !errors.Is(err, outauth.ErrRefused) {
		t.Fatalf("call: %v", err)
	}
}
