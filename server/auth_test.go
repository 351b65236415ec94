package server

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/dsl"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// startWithTokens serves the demo backends and workflows with two static
// bearer tokens: alice and bob.
func startWithTokens(t *testing.T) string {
	t.Helper()
	demo, ds := DemoConfig(nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	src := `name: auth-test
incoming_auth:
  type: tokens
  tokens:
    - {principal: alice, groups: [sre], sha256: "` + sha("alice-token") + `"}
    - {principal: bob, token_env: VMCP_TEST_BOB}
backends:
  - {name: incidents, builtin: incidents}
  - {name: logs, builtin: logs}
  - {name: metrics, builtin: metrics}
  - {name: deploys, builtin: deploys}
  - {name: chat, builtin: chat}
  - {name: tickets, builtin: tickets}
`
	t.Setenv("VMCP_TEST_BOB", "bob-token")
	cfg, ds := dsl.LoadConfig("auth.yaml", []byte(src), nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	cfg.LoadedWorkflows = demo.LoadedWorkflows
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close()
	})
	return srv.URL
}

func clientAs(t *testing.T, url, token string) (*client.Client, string) {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(t.Context(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "test"}}}); err != nil {
		t.Fatal(err)
	}
	return c, tr.GetSessionId()
}

func TestTokensAuthAndRunOwnership(t *testing.T) {
	url := startWithTokens(t)

	// No token, a wrong token: 401 pointing at the resource metadata.
	for _, auth := range []string{"", "Bearer nope"} {
		req, _ := http.NewRequest("POST", url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `resource_metadata="`+strings.Replace(url, "http://", "http://", 1)+`/.well-known/oauth-protected-resource"`) {
			t.Fatalf("auth %q: status %d, WWW-Authenticate %q", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	resp, err := http.Get(url + "/.well-known/oauth-protected-resource")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metadata: %v %v", err, resp)
	}
	resp.Body.Close()

	alice, aliceSession := clientAs(t, url, "alice-token")
	bob, _ := clientAs(t, url, "bob-token")

	res := callJSON(t, alice, "investigate_incident", `{"incident_id":"INC-1042"}`)
	meta := res.Meta.AdditionalFields["vmcp/run"].(map[string]any)
	runID := meta["id"].(string)

	// Bob neither sees nor answers Alice's run.
	if out := text(callJSON(t, bob, "vmcp_runs_list", `{}`)); strings.Contains(out, runID) {
		t.Fatalf("bob lists alice's run: %s", out)
	}
	for _, tool := range []string{"vmcp_run_get", "vmcp_run_cancel"} {
		if r := callJSON(t, bob, tool, `{"run_id":"`+runID+`"}`); !r.IsError || !strings.Contains(text(r), "not found") {
			t.Fatalf("bob %s: %s", tool, text(r))
		}
	}
	if r := callJSON(t, bob, "vmcp_run_resume", `{"run_id":"`+runID+`","action":"accept","content":{"page":true}}`); !r.IsError {
		t.Fatalf("bob answered alice's run: %s", text(r))
	}
	req, _ := http.NewRequest("GET", url+"/api/v1/runs/"+runID, nil)
	req.Header.Set("Authorization", "Bearer bob-token")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("bob GET alice's run: %v %v", err, resp.StatusCode)
	}

	// Bob's token on Alice's session is refused; her session is intact.
	req, _ = http.NewRequest("POST", url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer bob-token")
	req.Header.Set("Mcp-Session-Id", aliceSession)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "another principal") {
		t.Fatalf("session hijack: %d %s", resp.StatusCode, body)
	}

	// Alice answers on her session.
	done := callJSON(t, alice, "vmcp_run_resume", `{"run_id":"`+runID+`","action":"accept","content":{"page":true}}`)
	if done.IsError || !strings.Contains(text(done), `"paged":true`) {
		t.Fatalf("alice resume: %s", text(done))
	}
	got := text(callJSON(t, alice, "vmcp_run_get", `{"run_id":"`+runID+`"}`))
	if !strings.Contains(got, `"who":"alice"`) || !strings.Contains(got, `"status":"completed"`) {
		t.Fatalf("history does not record alice's answer: %s", got)
	}
}
