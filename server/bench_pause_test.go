package server

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// BenchmarkPauseCycle is the bench's scenario 4 in process: a 2026-07-28
// client calls the composite `pause` (one elicitation step), gets
// input_required (the run is created waiting: one commit), answers in its
// retry (claimed, resumed, finished: two more commits). cpu-µs/cycle is
// the process's CPU (gateway and client together) per cycle; the share
// that is vmcp's shows in a CPU profile:
//
//	go test ./server -run '^$' -bench PauseCycle -benchtime 3s -cpuprofile cpu.out
func BenchmarkPauseCycle(b *testing.B) {
	echo := mcpserver.NewMCPServer("echo", "1.0.0", mcpserver.WithToolCapabilities(true))
	echo.AddTool(mcp.NewTool("echo", mcp.WithString("message")), echoHandler)
	extra := `composite_tools:
  - name: pause
    description: One question, then done.
    parameters:
      type: object
      properties: {tag: {type: string}}
      required: [tag]
    steps:
      - id: ask
        type: elicitation
        message: "Proceed with {{ params.tag }}?"
        schema:
          type: object
          properties: {ok: {type: boolean}}
          required: [ok]
    output: {tag: "{{ params.tag }}", ok: "{{ steps.ask.content.ok }}"}
`
	_, u := startGateway(b, map[string]*mcpserver.MCPServer{"echo": echo}, false, extra, "")
	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
			clients := make([]*client.Client, conc)
			for i := range clients {
				clients[i] = cycleClient(b, u)
			}
			var seq atomic.Int64
			cycle := func(c *client.Client) error {
				tag := fmt.Sprint("t", seq.Add(1))
				req := mcp.CallToolRequest{}
				req.Params.Name = "pause"
				req.Params.Arguments = map[string]any{"tag": tag}
				res, err := c.CallTool(context.Background(), req)
				if err != nil {
					return err
				}
				if res.IsError {
					return fmt.Errorf("pause: tool error %v", res.Content)
				}
				m, _ := res.StructuredContent.(map[string]any)
				if m["tag"] != tag || m["ok"] != true {
					return fmt.Errorf("pause: result %v, want tag %s ok", res.StructuredContent, tag)
				}
				return nil
			}
			for _, c := range clients { // warm up: connections, plans
				if err := cycle(c); err != nil {
					b.Fatal(err)
				}
			}
			pool := make(chan *client.Client, conc)
			for _, c := range clients {
				pool <- c
			}
			cpu0 := processCPU()
			b.ResetTimer()
			if conc == 1 {
				for range b.N {
					if err := cycle(clients[0]); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism((conc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					c := <-pool
					for pb.Next() {
						if err := cycle(c); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu0)/time.Microsecond)/float64(b.N), "cpu-µs/cycle")
		})
	}
}

// cycleClient is a 2026-07-28 client that accepts every question with
// {"ok": true}.
func cycleClient(b *testing.B, u string) *client.Client {
	tr, err := transport.NewStreamableHTTP(u)
	if err != nil {
		b.Fatal(err)
	}
	c := client.NewClient(tr, client.WithElicitationHandler(okAccepter{}))
	if err := c.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(b.Context(), mcp.InitializeRequest{Params: mcp.InitializeParams{ClientInfo: mcp.Implementation{Name: "bench"}}}); err != nil {
		b.Fatal(err)
	}
	return c
}

type okAccepter struct{}

func (okAccepter) Elicit(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{
		Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"ok": true}}}, nil
}
