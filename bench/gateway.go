package main

// `bench gateway --config F --state P`: the same gateway as `vmcp serve`
// (server.New, Start, Handler), built into the bench binary so that it can
// also serve net/http/pprof and a forced-GC memory reading. The vmcp
// binary has no profiling endpoint; this child is what the profiles and
// the heap / goroutine counts of the report come from. Latency and RSS
// numbers come from the real `vmcp serve`.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strings"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/server"
)

func runGateway(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	cfgPath := fs.String("config", "", "vmcp config file")
	statePath := fs.String("state", "", "bbolt state file")
	_ = fs.Parse(args)
	var (
		cfg *dsl.Config
		ds  dsl.Diagnostics
	)
	if l, err := dsl.NewLoader(); err == nil {
		cfg, ds = l.LoadConfigFile(*cfgPath)
	} else {
		cfg, ds = dsl.LoadConfigFile(*cfgPath)
	}
	if len(ds) > 0 {
		var sb strings.Builder
		ds.Render(&sb)
		return errors.New(sb.String())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := server.New(cfg, &server.Options{Logger: log, Version: "bench", StatePath: *statePath})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := g.Start(ctx); err != nil {
		return err
	}
	defer g.Close()
	mux := http.NewServeMux()
	mux.Handle("/", g.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/bench/mem", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(memReading{HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, Sys: m.Sys, Goroutines: runtime.NumGoroutine()})
	})
	return serveReady(mux)
}

// memReading is /debug/bench/mem of the gateway child.
type memReading struct {
	HeapAlloc  uint64 `json:"heap_alloc"`
	HeapInuse  uint64 `json:"heap_inuse"`
	Sys        uint64 `json:"sys"`
	Goroutines int    `json:"goroutines"`
}

func readMem(base string) (memReading, error) {
	var m memReading
	resp, err := http.Get(base + "/debug/bench/mem")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	return m, json.NewDecoder(resp.Body).Decode(&m)
}
