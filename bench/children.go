package main

// The bench program's child processes: the echo MCP backend (over
// streamable HTTP with many endpoints, or over stdio), a trivial HTTP
// server and an httputil.ReverseProxy. Each runs as `bench <subcommand>` in
// its own process, binds a free loopback port and prints "READY <addr>".

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// echoSchema is the echo tool's input schema.
const echoSchema = `{"type":"object","properties":{"msg":{"type":"string","description":"Text to send back."},"sleep_ms":{"type":"integer","minimum":0,"description":"Service time to simulate, in milliseconds."}},"required":["msg"]}`

// fillerSchema is the input schema of the filler tools that make a
// catalogue of realistic size (about 450 bytes per listed tool).
const fillerSchema = `{"type":"object","properties":{"service":{"type":"string","description":"Service name, e.g. checkout."},"since":{"type":"string","description":"Window to look at, as a duration."},"limit":{"type":"integer","minimum":1,"maximum":1000}},"required":["service"]}`

// echoCounters counts what the echo backend was asked, over all endpoints.
type echoCounters struct {
	Initialize atomic.Int64 // initialize requests (2025-11-25 sessions)
	Discover   atomic.Int64 // server/discover requests (2026-07-28 handshakes)
	Calls      atomic.Int64 // tools/call of echo
	Lists      atomic.Int64 // tools/list
	Conns      atomic.Int64 // TCP connections accepted

	precise bool // service times by nanosleep(2), not the Go timer (--precise-sleep)
	traceMu sync.Mutex
	trace   []callTrace // echo calls with a service time, until GET /trace takes them
}

// callTrace is one echo call with a service time as the backend saw it:
// when the HTTP request reached the backend's handler, how long the tool
// actually slept, and when the response was written (Unix ns, comparable
// with the bench process's clock: same machine).
type callTrace struct {
	Msg   string `json:"msg"`
	In    int64  `json:"in"`
	Want  int64  `json:"want_ns"`
	Slept int64  `json:"slept_ns"`
	Out   int64  `json:"out"`
}

type traceKey struct{}

// maxTrace bounds the trace between two reads.
const maxTrace = 1 << 16

// traced records the echo calls with a service time that h serves.
func (c *echoCounters) traced(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &callTrace{In: time.Now().UnixNano()}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), traceKey{}, rec)))
		if rec.Want == 0 {
			return
		}
		rec.Out = time.Now().UnixNano()
		c.traceMu.Lock()
		if len(c.trace) < maxTrace {
			c.trace = append(c.trace, *rec)
		}
		c.traceMu.Unlock()
	})
}

// serviceTime waits d, or until ctx ends. The Go timer of an otherwise idle
// process fires late by up to about a millisecond (the runtime's netpoller
// waits in whole milliseconds, truncated, then once more for the rest);
// precise waits with nanosleep(2) on the goroutine's thread (a
// high-resolution kernel timer; the runtime hands the P to another thread
// meanwhile), so a service time is the same whoever calls.
func serviceTime(ctx context.Context, d time.Duration, precise bool) error {
	if precise {
		ts := syscall.NsecToTimespec(int64(d))
		for {
			var rem syscall.Timespec
			if err := syscall.Nanosleep(&ts, &rem); err != syscall.EINTR {
				break
			}
			ts = rem
		}
		return ctx.Err()
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}

func (c *echoCounters) snapshot() map[string]int64 {
	return map[string]int64{"initialize": c.Initialize.Load(), "discover": c.Discover.Load(),
		"calls": c.Calls.Load(), "lists": c.Lists.Load(), "conns": c.Conns.Load()}
}

// newEchoServer is one MCP server: echo, bump (adds a tool, which sends
// tools/list_changed) and fillers up to tools tools in all.
func newEchoServer(id, tools int, cnt *echoCounters) *mcpserver.MCPServer {
	hooks := &mcpserver.Hooks{}
	hooks.AddBeforeInitialize(func(context.Context, any, *mcp.InitializeRequest) { cnt.Initialize.Add(1) })
	hooks.AddBeforeDiscover(func(context.Context, any, *mcp.DiscoverRequest) { cnt.Discover.Add(1) })
	hooks.AddBeforeListTools(func(context.Context, any, *mcp.ListToolsRequest) { cnt.Lists.Add(1) })
	s := mcpserver.NewMCPServer(fmt.Sprintf("bench-echo-%d", id), "1.0.0",
		mcpserver.WithToolCapabilities(true), mcpserver.WithHooks(hooks))

	echo := mcp.NewToolWithRawSchema("echo", "Returns msg as text after sleep_ms milliseconds.", json.RawMessage(echoSchema))
	echo.Annotations = mcp.ToolAnnotation{ReadOnlyHint: mcp.ToBoolPtr(true), IdempotentHint: mcp.ToBoolPtr(true)}
	all := []mcpserver.ServerTool{{Tool: echo, Handler: func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		cnt.Calls.Add(1)
		var in struct {
			Msg     string  `json:"msg"`
			SleepMS float64 `json:"sleep_ms"`
		}
		if err := req.BindArguments(&in); err != nil {
			return mcp.NewToolResultError("bad arguments: " + err.Error()), nil
		}
		if in.SleepMS > 0 {
			want := time.Duration(in.SleepMS * float64(time.Millisecond))
			t0 := time.Now()
			if err := serviceTime(ctx, want, cnt.precise); err != nil {
				return nil, err
			}
			if rec, ok := ctx.Value(traceKey{}).(*callTrace); ok {
				rec.Msg, rec.Want, rec.Slept = in.Msg, int64(want), int64(time.Since(t0))
			}
		}
		return mcp.NewToolResultText(in.Msg), nil
	}}}

	bump := mcp.NewToolWithRawSchema("bump", "Adds a tool named name (sends tools/list_changed); returns the time it did, in Unix nanoseconds.",
		json.RawMessage(`{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`))
	all = append(all, mcpserver.ServerTool{Tool: bump, Handler: func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		name := req.GetString("name", "")
		if name == "" {
			return mcp.NewToolResultError("name is required"), nil
		}
		at := time.Now().UnixNano()
		s.AddTool(mcp.NewToolWithRawSchema(name, "Added by bump.", json.RawMessage(fillerSchema)), nopTool)
		return mcp.NewToolResultText(strconv.FormatInt(at, 10)), nil
	}})
	for i := len(all); i < tools; i++ {
		t := mcp.NewToolWithRawSchema(fmt.Sprintf("tool_%02d", i),
			fmt.Sprintf("Filler tool %d of bench backend %d: looks up something about a service over a time window.", i, id),
			json.RawMessage(fillerSchema))
		t.Annotations = mcp.ToolAnnotation{ReadOnlyHint: mcp.ToBoolPtr(true)}
		all = append(all, mcpserver.ServerTool{Tool: t, Handler: nopTool})
	}
	s.AddTools(all...)
	return s
}

func nopTool(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	return mcp.NewToolResultText("ok"), nil
}

// runEchoBackend: `bench echo-backend [--endpoints N] [--tools T] [--stdio]`.
// Over HTTP it serves /mcp/0 … /mcp/N-1 (each its own mcp-go server) and
// GET /stats (the counters as JSON).
func runEchoBackend(args []string) error {
	fs := flag.NewFlagSet("echo-backend", flag.ExitOnError)
	endpoints := fs.Int("endpoints", 1, "MCP endpoints to serve (/mcp/0 …)")
	tools := fs.Int("tools", 2, "tools per endpoint (echo, bump and fillers)")
	stdio := fs.Bool("stdio", false, "serve one endpoint over stdin/stdout")
	precise := fs.Bool("precise-sleep", false, "service times (sleep_ms) by nanosleep(2) instead of the Go timer")
	_ = fs.Parse(args)
	if *stdio {
		var cnt echoCounters
		return mcpserver.ServeStdio(newEchoServer(0, *tools, &cnt))
	}
	mux, cnt := echoMux(*endpoints, *tools, *precise)
	return serveReady(mux, func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			cnt.Conns.Add(1)
		}
	})
}

// echoMux is the echo backend's HTTP handler: /mcp/0 … /mcp/N-1 (each its
// own mcp-go server, traced), GET /stats and GET /trace.
func echoMux(endpoints, tools int, precise bool) (*http.ServeMux, *echoCounters) {
	cnt := &echoCounters{precise: precise}
	mux := http.NewServeMux()
	for i := range endpoints {
		mux.Handle(fmt.Sprintf("/mcp/%d", i), cnt.traced(mcpserver.NewStreamableHTTPServer(newEchoServer(i, tools, cnt))))
	}
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(cnt.snapshot())
	})
	// GET /trace: the echo calls with a service time since the last read.
	mux.HandleFunc("GET /trace", func(w http.ResponseWriter, _ *http.Request) {
		cnt.traceMu.Lock()
		tr := cnt.trace
		cnt.trace = nil
		cnt.traceMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(tr)
	})
	return mux, cnt
}

// runHTTPFloor: `bench http-floor`: POST /echo returns the body; PUT
// /blob?i=K stores a payload, POST /blob?i=K returns it (pre-serialised
// bytes).
func runHTTPFloor(_ []string) error {
	var (
		mu    sync.RWMutex
		blobs = map[string][]byte{}
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("PUT /blob", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		blobs[r.URL.Query().Get("i")] = b
		mu.Unlock()
	})
	mux.HandleFunc("POST /blob", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.RLock()
		b := blobs[r.URL.Query().Get("i")]
		mu.RUnlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	return serveReady(mux)
}

// runProxy: `bench proxy --target URL`: an httputil.ReverseProxy.
func runProxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	target := fs.String("target", "", "upstream base URL")
	_ = fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--target %q: not a URL", *target)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	rp.Transport = tr
	return serveReady(rp)
}

// serveReady serves h on a free loopback port, announces it and runs until
// SIGTERM/SIGINT or stdin closes (so children never outlive the bench).
func serveReady(h http.Handler, connState ...func(net.Conn, http.ConnState)) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if len(connState) > 0 {
		srv.ConnState = connState[0]
	}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("READY %s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // parent gone → EOF
		stop()
	}()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// isChild reports whether args name a child subcommand, and runs it.
func runChild(args []string) (bool, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return false, nil
	}
	switch args[0] {
	case "echo-backend":
		return true, runEchoBackend(args[1:])
	case "http-floor":
		return true, runHTTPFloor(args[1:])
	case "proxy":
		return true, runProxy(args[1:])
	case "gateway":
		return true, runGateway(args[1:])
	}
	return true, fmt.Errorf("unknown subcommand %q (echo-backend, http-floor, proxy, gateway)", args[0])
}
