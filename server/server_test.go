package server

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/state"
)

// startDemo serves the embedded demo on a loopback test server.
func startDemo(t *testing.T) (*Gateway, string) {
	t.Helper()
	g, srv := startDemoOn(t, nil)
	return g, srv.URL + "/mcp"
}

// startDemoOn serves the demo on a bbolt store that wrap (nil: none)
// wraps, as a test driver with the capabilities it needs.
func startDemoOn(t *testing.T, wrap func(state.Driver) state.Driver) (*Gateway, *httptest.Server) {
	t.Helper()
	cfg, ds := DemoConfig(nil)
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	g, err := New(cfg, &Options{StatePath: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	g.wrapStore = wrap
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = g.Close()
	})
	return g, srv
}

type answerer struct {
	calls   atomic.Int32
	content map[string]any
	action  mcp.ElicitationResponseAction
}

func (a *answerer) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	a.calls.Add(1)
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: a.action, Content: a.content}}, nil
}

func newClient(t *testing.T, url string, opts ...client.ClientOption) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url)
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, opts...)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(t.Context(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "test"}}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func callJSON(t *testing.T, c *client.Client, name string, args string) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	res, err := c.CallTool(t.Context(), req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func text(res *mcp.CallToolResult) string {
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String()
}

func TestDemoBothEras(t *testing.T) {
	_, url := startDemo(t)
	for _, era := range []struct {
		name string
		opts []client.ClientOption
	}{
		{"2025-11-25 session", []client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}},
		{"2026-07-28 stateless", nil},
	} {
		t.Run(era.name, func(t *testing.T) {
			ans := &answerer{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"page": true, "note": "from test"}}
			c := newClient(t, url, append(era.opts, client.WithElicitationHandler(ans))...)
			tools, err := c.ListTools(t.Context(), mcp.ListToolsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]bool{}
			for _, tl := range tools.Tools {
				names[tl.Name] = true
			}
			for _, want := range []string{"investigate_incident", "logs_search", "incidents_get_incident", "vmcp_run_resume"} {
				if !names[want] {
					t.Errorf("tools/list lacks %s", want)
				}
			}
			// A plain tool: passed through.
			res := callJSON(t, c, "incidents_get_incident", `{"id":"INC-1042"}`)
			if res.IsError || !strings.Contains(text(res), "checkout") {
				t.Fatalf("plain tool: %+v", res)
			}
			// The flagship composite asks whether to page (INC-1042 is bad).
			res = callJSON(t, c, "investigate_incident", `{"incident_id":"INC-1042"}`)
			if res.IsError {
				t.Fatalf("composite failed: %s", text(res))
			}
			if ans.calls.Load() != 1 {
				t.Fatalf("elicitation asked %d times, want 1", ans.calls.Load())
			}
			var out map[string]any
			if err := json.Unmarshal([]byte(text(res)), &out); err != nil {
				t.Fatalf("result text is not JSON: %q", text(res))
			}
			if out["paged"] != true || out["service"] != "checkout" || !strings.HasPrefix(out["ticket"].(string), "T-") {
				t.Fatalf("report: %v", out)
			}
		})
	}
}

func TestPausedResultAndResumeTool(t *testing.T) {
	_, url := startDemo(t)
	c := newClient(t, url, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	res := callJSON(t, c, "investigate_incident", `{"incident_id":"INC-1042"}`)
	if res.IsError || !strings.Contains(text(res), "vmcp_run_resume") {
		t.Fatalf("want a paused result, got %s", text(res))
	}
	meta := res.Meta.AdditionalFields["vmcp/run"].(map[string]any)
	runID := meta["id"].(string)
	if meta["status"] != "waiting" || meta["step"] != "confirm_page" {
		t.Fatalf("meta %v", meta)
	}
	// A bad answer is refused and the run keeps waiting.
	bad := callJSON(t, c, "vmcp_run_resume", `{"run_id":"`+runID+`","action":"accept","content":{"page":"maybe"}}`)
	if !bad.IsError || !strings.Contains(text(bad), "invalid answer") {
		t.Fatalf("bad answer: %s", text(bad))
	}
	done := callJSON(t, c, "vmcp_run_resume", `{"run_id":"`+runID+`","action":"accept","content":{"page":false}}`)
	if done.IsError || !strings.Contains(text(done), `"paged":false`) {
		t.Fatalf("resume: %s", text(done))
	}
	again := callJSON(t, c, "vmcp_run_resume", `{"run_id":"`+runID+`","action":"accept","content":{"page":false}}`)
	if !again.IsError || !strings.Contains(text(again), "not waiting") {
		t.Fatalf("second answer: %s", text(again))
	}
}

// A resume token answers only a call to the tool whose run asked: a retry
// that carries it to another composite is refused and the run keeps
// waiting.
func TestTokenOnlyForItsOwnTool(t *testing.T) {
	g, url := startDemo(t)
	c := newClient(t, url, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	res := callJSON(t, c, "investigate_incident", `{"incident_id":"INC-1042"}`)
	meta := res.Meta.AdditionalFields["vmcp/run"].(map[string]any)
	runID := meta["id"].(string)
	tok, err := g.runs.token(t.Context(), runID, "anonymous", &engine.Question{Step: "confirm_page"}) // Seq 0: read from the store
	if err != nil {
		t.Fatal(err)
	}
	answer := mcp.InputResponses{}
	_ = json.Unmarshal([]byte(`{"confirm_page":{"action":"accept","content":{"page":false}}}`), &answer)
	_, _, err = g.answerToken(t.Context(), tok, "some_other_composite", answer, "anonymous", &engine.RunOptions{Durable: true})
	if err == nil || !strings.Contains(err.Error(), `belongs to a run of "investigate_incident"`) {
		t.Fatalf("token carried to another tool: %v", err)
	}
	if run, _ := g.runs.store.Get(t.Context(), runID); run.Status != "waiting" {
		t.Fatalf("the run is %s after a refused retry, want waiting", run.Status)
	}
}
