package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

type fixedSampler struct {
	calls atomic.Int32
	reply string
}

func (s *fixedSampler) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	s.calls.Add(1)
	return &mcp.CreateMessageResult{SamplingMessage: mcp.SamplingMessage{Role: mcp.RoleAssistant, Content: mcp.NewTextContent(s.reply)}, Model: "test"}, nil
}

// askingBackends serves two HTTP backends whose tool asks the caller:
// "modern" (2026-07-28) asks with input_required, an elicitation and then
// a sampling request; "legacy" (pinned to 2025-11-25) sends
// elicitation/create on its session.
func askingBackends(t *testing.T) string {
	modern := mcpserver.NewMCPServer("modern", "1.0.0", mcpserver.WithToolCapabilities(true))
	modern.AddTool(mcp.NewTool("ask"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		// Each retry carries the answers of the last round only; earlier
		// ones travel in requestState.
		if llm := mcpserver.SamplingResponse(req.Params.InputResponses, "llm"); llm != nil {
			// mcp-go decodes a sampling answer's content as a map on the
			// 2026-07-28 path and as TextContent on the legacy one.
			said := fmt.Sprint(llm.Content)
			switch c := llm.Content.(type) {
			case mcp.TextContent:
				said = c.Text
			case map[string]any:
				said, _ = c["text"].(string)
			}
			return mcp.NewToolResultText(strings.TrimPrefix(req.Params.RequestState, "round-2:") + " / " + said), nil
		}
		if name := mcpserver.ElicitationResponse(req.Params.InputResponses, "name"); name != nil {
			got, _ := name.Content.(map[string]any)["name"].(string)
			return mcpserver.NewInputRequestBuilder("round-2:"+string(name.Action)+" "+got).
				Sample("llm", mcp.CreateMessageParams{Messages: []mcp.SamplingMessage{{Role: mcp.RoleUser, Content: mcp.NewTextContent("greet")}}, MaxTokens: 10}).
				ToolResult(), nil
		}
		return mcpserver.NewInputRequestBuilder("round-1").
			Elicit("name", mcp.ElicitationParams{Message: "Your name?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}}).
			ToolResult(), nil
	})
	legacy := mcpserver.NewMCPServer("legacy", "1.0.0", mcpserver.WithToolCapabilities(true))
	legacy.AddTool(mcp.NewTool("ask"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := legacy.RequestElicitation(ctx, mcp.ElicitationRequest{Params: mcp.ElicitationParams{
			Message: "Your name?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}}})
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		got, _ := res.Content.(map[string]any)["name"].(string)
		return mcp.NewToolResultText(string(res.Action) + " " + got), nil
	})
	ms := httptest.NewServer(mcpserver.NewStreamableHTTPServer(modern))
	t.Cleanup(ms.Close)
	ls := httptest.NewServer(mcpserver.NewStreamableHTTPServer(legacy))
	t.Cleanup(ls.Close)
	return "  - {name: modern, url: " + ms.URL + "/mcp, protocol_version: \"2026-07-28\"}\n" +
		"  - {name: legacy, url: " + ls.URL + "/mcp, protocol_version: \"2025-11-25\"}\n"
}

// A backend's questions reach a 2026-07-28 client as input_required and
// its answers reach the backend, whichever era the backend speaks; a
// 2025-11-25 client still gets them live.
func TestBridgeRelaysBackendRequests(t *testing.T) {
	g, url := startGateway(t, nil, false, "", askingBackends(t))
	for _, era := range []struct {
		name string
		opts []client.ClientOption
	}{{"client-2026-07-28", nil}, {"client-2025-11-25", []client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}}} {
		t.Run(era.name, func(t *testing.T) {
			eli := &answerer{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"name": "Ada"}}
			smp := &fixedSampler{reply: "hello Ada"}
			c := newClient(t, url, append(era.opts, client.WithElicitationHandler(eli), client.WithSamplingHandler(smp))...)
			if got := text(callJSON(t, c, "legacy_ask", `{}`)); got != "accept Ada" {
				t.Errorf("legacy backend: %q, want %q", got, "accept Ada")
			}
			if era.opts != nil {
				return // a 2025-11-25 client cannot call a modern backend's sampling over POST (mcp-go sends it on the GET stream)
			}
			if got := text(callJSON(t, c, "modern_ask", `{}`)); got != "accept Ada / hello Ada" {
				t.Errorf("modern backend: %q, want %q", got, "accept Ada / hello Ada")
			}
			if eli.calls.Load() != 2 || smp.calls.Load() != 1 {
				t.Errorf("client handlers called: elicitation %d (want 2), sampling %d (want 1)", eli.calls.Load(), smp.calls.Load())
			}
		})
	}
	g.bridge.mu.Lock()
	left := len(g.bridge.calls)
	g.bridge.mu.Unlock()
	if left != 0 {
		t.Errorf("%d bridged calls still registered after every call finished", left)
	}
}

// A bad answer is refused and leaves the question waiting; an unknown
// requestState gets a clear error; a client that declared no elicitation
// is not asked.
func TestBridgeRefusals(t *testing.T) {
	g, url := startGateway(t, nil, false, "", askingBackends(t))

	bad := &answerer{action: "maybe"}
	c := newClient(t, url, client.WithElicitationHandler(bad))
	res := callJSON(t, c, "legacy_ask", `{}`)
	if !res.IsError || !strings.Contains(text(res), `action "maybe" is not accept, decline or cancel`) {
		t.Errorf("bad answer: isError=%v %q", res.IsError, text(res))
	}
	g.bridge.mu.Lock()
	waiting := len(g.bridge.calls)
	g.bridge.mu.Unlock()
	if waiting != 1 {
		t.Errorf("%d calls waiting after a refused answer, want 1 (the question stays open)", waiting)
	}

	req := mcp.CallToolRequest{}
	req.Params.Name = "legacy_ask"
	req.Params.RequestState = relayStatePrefix + "00112233445566778899aabbccddeeff"
	res, err := g.toolHandler("legacy_ask")(t.Context(), req)
	if err != nil || !res.IsError || !strings.Contains(text(res), "names no backend question waiting for you") {
		t.Errorf("unknown requestState: %v %+v", err, res)
	}

	plain := newClient(t, url) // 2026-07-28, no elicitation declared
	res = callJSON(t, plain, "legacy_ask", `{}`)
	if !res.IsError || !strings.Contains(text(res), "did not declare") && !strings.Contains(text(res), "cannot pause") {
		t.Errorf("undeclared elicitation: isError=%v %q", res.IsError, text(res))
	}
}
