package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/vmcp-dev/vmcp/server"
)

// Benchmarks of durable pauses in process: the embedded demo gateway
// with a state file in a temporary directory, served by httptest, and
// mcp-go clients on the 2025-11-25 protocol that do not declare
// elicitation (so a question comes back as a paused result).
//
//	go test ./server -run '^$' -bench PauseResume -benchtime 2s
//	go test ./server -run '^$' -bench WaitingRunFootprint -benchtime 1x

// benchGateway starts the demo gateway and returns its /mcp URL.
func benchGateway(b *testing.B) string {
	b.Helper()
	cfg, ds := server.DemoConfig(nil)
	if len(ds) > 0 {
		b.Fatal(ds)
	}
	g, err := server.New(cfg, &server.Options{StatePath: filepath.Join(b.TempDir(), "state.db")})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := g.Start(ctx); err != nil {
		cancel()
		b.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	b.Cleanup(func() {
		srv.Close()
		cancel()
		_ = g.Close()
	})
	return srv.URL + "/mcp"
}

// benchHTTP is shared by the clients: enough idle connections for 64
// concurrent callers (the default keeps 2 per host).
var benchHTTP = &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}}

// benchClients opens n initialized clients.
func benchClients(b *testing.B, url string, n int) []*client.Client {
	b.Helper()
	out := make([]*client.Client, n)
	for i := range out {
		tr, err := transport.NewStreamableHTTP(url, transport.WithHTTPBasicClient(benchHTTP))
		if err != nil {
			b.Fatal(err)
		}
		c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		if _, err := c.Initialize(context.Background(), mcp.InitializeRequest{Params: mcp.InitializeParams{
			ClientInfo: mcp.Implementation{Name: "vmcp-bench", Version: "1"}}}); err != nil {
			b.Fatal(err)
		}
		out[i] = c
	}
	return out
}

func callTool(c *client.Client, name, args string) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = json.RawMessage(args)
	return c.CallTool(ctx, req)
}

func runMetaOf(res *mcp.CallToolResult) map[string]any {
	if res == nil || res.Meta == nil {
		return nil
	}
	m, _ := res.Meta.AdditionalFields["vmcp/run"].(map[string]any)
	return m
}

// pauseOnce calls investigate_incident for INC-1042, which stops at
// confirm_page, and returns the waiting run's id.
func pauseOnce(c *client.Client) (string, error) {
	res, err := callTool(c, "investigate_incident", `{"incident_id":"INC-1042"}`)
	if err != nil {
		return "", err
	}
	m := runMetaOf(res)
	id, _ := m["id"].(string)
	if res.IsError || m["status"] != "waiting" || id == "" {
		return "", fmt.Errorf("not a paused result: isError %v, _meta %v", res.IsError, m)
	}
	return id, nil
}

// resumeOnce answers a waiting run through vmcp_run_resume.
func resumeOnce(c *client.Client, id string) error {
	res, err := callTool(c, "vmcp_run_resume", fmt.Sprintf(`{"run_id":%q,"action":"accept","content":{"page":false}}`, id))
	if err != nil {
		return err
	}
	if m := runMetaOf(res); res.IsError || m["status"] != "completed" {
		return fmt.Errorf("resume of %s did not complete: isError %v, _meta %v", id, res.IsError, m)
	}
	return nil
}

// parallelism returns the SetParallelism factor for conc goroutines.
func parallelism(conc int) int {
	procs := runtime.GOMAXPROCS(0)
	return max(1, (conc+procs-1)/procs)
}

// run calls op b.N times with conc callers, each with its own client.
func run(b *testing.B, conc int, clients []*client.Client, op func(c *client.Client, i int) error) {
	b.Helper()
	if conc == 1 {
		for i := 0; i < b.N; i++ {
			if err := op(clients[0], i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	pool := make(chan *client.Client, len(clients))
	for _, c := range clients {
		pool <- c
	}
	var (
		mu sync.Mutex
		n  int
	)
	b.SetParallelism(parallelism(conc))
	b.RunParallel(func(pb *testing.PB) {
		c := <-pool
		for pb.Next() {
			mu.Lock()
			i := n
			n++
			mu.Unlock()
			if err := op(c, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// pausedRuns makes n waiting runs with the clients (not timed).
func pausedRuns(b *testing.B, clients []*client.Client, n int) []string {
	b.Helper()
	ids := make([]string, n)
	next := make(chan int)
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := pauseOnce(c)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					continue
				}
				ids[i] = id
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return ids
}

// BenchmarkPauseResume: a composite call that reaches its question and
// returns the paused result (the pause is persisted first), and the
// answer through vmcp_run_resume that finishes the run; with 1 and 64
// concurrent callers.
func BenchmarkPauseResume(b *testing.B) {
	for _, conc := range []int{1, 64} {
		clientsFor := func(b *testing.B, url string) []*client.Client {
			if conc == 1 {
				return benchClients(b, url, 1)
			}
			return benchClients(b, url, parallelism(conc)*runtime.GOMAXPROCS(0))
		}
		b.Run(fmt.Sprintf("pause/c%d", conc), func(b *testing.B) {
			url := benchGateway(b)
			clients := clientsFor(b, url)
			for _, c := range clients { // warm up: sessions, connections, plans
				if _, err := pauseOnce(c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			run(b, conc, clients, func(c *client.Client, _ int) error {
				_, err := pauseOnce(c)
				return err
			})
		})
		b.Run(fmt.Sprintf("resume/c%d", conc), func(b *testing.B) {
			url := benchGateway(b)
			clients := clientsFor(b, url)
			ids := pausedRuns(b, clients, b.N+len(clients))
			for i, c := range clients { // warm up
				if err := resumeOnce(c, ids[b.N+i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			run(b, conc, clients, func(c *client.Client, i int) error {
				return resumeOnce(c, ids[i])
			})
		})
	}
}

// BenchmarkWaitingRunFootprint measures what 10,000 waiting runs cost
// the process: Go heap and goroutines before and after creating them
// (the target is no goroutine and nothing but a small cache entry per
// waiting run). The heap figure includes what the in-process demo
// backends keep (the chat backend stores every message the notify step
// posts before the question). It does the work once whatever b.N is; run
// it with -benchtime 1x. VMCP_BENCH_HEAPPROFILE=FILE writes a heap
// profile with the 10,000 runs waiting (every allocation sampled: slow).
func BenchmarkWaitingRunFootprint(b *testing.B) {
	const runs = 10_000
	if os.Getenv("VMCP_BENCH_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	url := benchGateway(b)
	clients := benchClients(b, url, 64)
	// Warm up with all 64 callers at once, so that every connection,
	// session and cache exists before the baseline.
	pausedRuns(b, clients, 4*len(clients))
	settle := func() (heap uint64, goroutines int) {
		time.Sleep(200 * time.Millisecond) // handlers and streams wind down
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, runtime.NumGoroutine()
	}
	heap0, g0 := settle()
	start := time.Now()
	b.ResetTimer()
	pausedRuns(b, clients, runs)
	b.StopTimer()
	took := time.Since(start)
	heap1, g1 := settle()
	if f := os.Getenv("VMCP_BENCH_HEAPPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		_ = pprof.WriteHeapProfile(out)
		_ = out.Close()
	}
	perRun := (float64(heap1) - float64(heap0)) / runs
	b.ReportMetric(perRun, "heap-B/waiting-run")
	b.ReportMetric(float64(g1-g0)/runs, "goroutines/waiting-run")
	b.Logf("%d waiting runs created in %s with 64 callers; heap %d → %d bytes (%.0f B per run); goroutines %d → %d",
		runs, took.Round(time.Millisecond), heap0, heap1, perRun, g0, g1)
}
