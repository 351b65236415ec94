package demo_test

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/backends/demo"
)

// ServeStdio speaks MCP over a pair of pipes to a real mcp-go stdio client
// (transport.NewIO: the stdio transport over given streams instead of a
// child process), and returns nil when its input ends. mcp-go's stdio
// server keeps its session in a package variable, so these tests do not
// run in parallel.
func TestServeStdio(t *testing.T) {
	ctx := t.Context()
	toServer, clientOut := io.Pipe()
	clientIn, fromServer := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- demo.ServeStdio(ctx, "tickets", toServer, fromServer) }()

	c := client.NewClient(transport.NewIO(clientIn, clientOut, io.NopCloser(strings.NewReader(""))))
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init, err := c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "demo-test", Version: "0"}}})
	if err != nil {
		t.Fatal(err)
	}
	if init.ServerInfo.Name != "vmcp-demo-tickets" {
		t.Errorf("server name %q", init.ServerInfo.Name)
	}

	list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"create", "get"}) {
		t.Errorf("tools %v, want create and get", names)
	}

	res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "create", Arguments: json.RawMessage(`{"title":"over stdio","body":"b"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if got := output(t, "tickets.create", res); got.(map[string]any)["id"] != "T-1" {
		t.Errorf("create: %v", got)
	}
	res, err = c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get", Arguments: map[string]any{"id": "T-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := output(t, "tickets.get", res); got.(map[string]any)["title"] != "over stdio" {
		t.Errorf("get: %v", got)
	}
	res, err = c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get", Arguments: map[string]any{"id": "T-9"}}})
	if err != nil || !res.IsError {
		t.Errorf("get T-9: %v, isError %v", err, res != nil && res.IsError)
	}

	// Closing the client closes the server's input: ServeStdio returns nil.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeStdio: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeStdio did not return after its input was closed")
	}
	_ = fromServer.Close()
}

// Cancelling the context stops the server (nil: stopping is normal) even
// while it waits for input.
func TestServeStdioCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	in, inW := io.Pipe()
	t.Cleanup(func() { _ = inW.Close() })
	done := make(chan error, 1)
	go func() { done <- demo.ServeStdio(ctx, "chat", in, io.Discard) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeStdio after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeStdio did not return after cancel")
	}
}

func TestServeStdioUnknown(t *testing.T) {
	err := demo.ServeStdio(t.Context(), "pager", strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"pager"`) {
		t.Errorf("ServeStdio(pager) = %v, want an error naming it", err)
	}
}
