package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// mcpPost sends one JSON-RPC message to p's /mcp as a 2025-11-25 session
// client would and returns the status, the session id header and the
// JSON-RPC response (nil for notifications and errors).
func mcpPost(t *testing.T, p *proc, bearer, sid, body string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.URL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", string(legacy))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || len(bytes.TrimSpace(raw)) == 0 {
		return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), nil
	}
	var msg []byte
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && strings.Contains(d, `"result"`) || ok && strings.Contains(d, `"error"`) {
				msg = []byte(d)
			}
		}
	} else {
		msg = raw
	}
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatalf("response to %s: %v: %s", body, err, raw)
	}
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), m
}

// A 2025-11-25 session created on replica A is accepted by replica B for
// ordinary requests (tools/list, a tools/call whose question B cannot ask
// live: the paused result), only with the identity it is bound to; a
// session ended by its client is refused everywhere.
func TestPostgresSessions(t *testing.T) {
	const aliceTok, bobTok = "alice-session-secret", "bob-session-secret"
	cfg, _ := durableSetup(t, "", nil)
	cfg += postgresState(t, "2s", "") + fmt.Sprintf(
		"incoming_auth:\n  type: tokens\n  tokens:\n    - {principal: alice, sha256: %q}\n    - {principal: bob, sha256: %q}\n",
		sha256hex(aliceTok), sha256hex(bobTok))
	a, b := startVMCP(t, cfg), startVMCP(t, cfg)

	code, sid, res := mcpPost(t, a, aliceTok, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}},"clientInfo":{"name":"e2e","version":"1"}}}`)
	if code != http.StatusOK || sid == "" || res["result"] == nil {
		t.Fatalf("initialize on A: %d, session %q, %v", code, sid, res)
	}
	if code, _, _ := mcpPost(t, a, aliceTok, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); code != http.StatusAccepted {
		t.Fatalf("initialized on A: %d", code)
	}

	// B serves the session's ordinary requests.
	code, _, res = mcpPost(t, b, aliceTok, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	tools, _ := res["result"].(map[string]any)["tools"].([]any)
	if code != http.StatusOK || len(tools) == 0 {
		t.Fatalf("tools/list on B with A's session: %d %v", code, res)
	}
	code, _, res = mcpPost(t, b, aliceTok, sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"investigate_incident","arguments":{"incident_id":"INC-1042"}}}`)
	if code != http.StatusOK || res["result"] == nil {
		t.Fatalf("tools/call on B with A's session: %d %v", code, res)
	}
	meta, _ := res["result"].(map[string]any)["_meta"].(map[string]any)
	run, _ := meta["vmcp/run"].(map[string]any)
	id, _ := run["id"].(string)
	if run["status"] != "waiting" || run["step"] != "confirm_page" {
		t.Fatalf("tools/call on B: want the paused result (B does not hold the session's streams): %v", res)
	}
	if v := apiRunAs(t, a, aliceTok, id); v.Status != "waiting" {
		t.Fatalf("run %s is %s on A", id, v.Status)
	}

	// Bob cannot use Alice's session on either replica; an unknown
	// session is not found.
	for _, p := range []*proc{a, b} {
		if code, _, _ := mcpPost(t, p, bobTok, sid, `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`); code != http.StatusForbidden {
			t.Errorf("bob with alice's session: %d, want 403", code)
		}
	}
	if code, _, _ := mcpPost(t, b, aliceTok, "mcp-session-00000000000000000000000000000000", `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`); code != http.StatusNotFound {
		t.Errorf("unknown session on B: %d, want 404", code)
	}

	// The client ends the session on A: B refuses it too.
	req, _ := http.NewRequest(http.MethodDelete, a.URL, nil)
	req.Header.Set("Authorization", "Bearer "+aliceTok)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE on A: %d", resp.StatusCode)
	}
	// B cached the session for up to a minute; a fresh replica sees it gone.
	c := startVMCP(t, cfg)
	if code, _, _ := mcpPost(t, c, aliceTok, sid, `{"jsonrpc":"2.0","id":6,"method":"tools/list"}`); code != http.StatusNotFound {
		t.Errorf("ended session on a third replica: %d, want 404", code)
	}
}
