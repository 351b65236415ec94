package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
)

// profiles runs three workloads against the gateway child (the same
// server code as vmcp serve, plus pprof) and puts the CPU profile's top
// entries in the report: where the missed targets' time goes.
func (b *bench) profiles(ctx context.Context) error {
	const sc = "profiles"
	cfg := compositeConfig(b.echoURL(0), []int{50})
	// Reuse the pause composite: append it to the composite list.
	pc := pauseConfig(b.echoURL(0))
	cfg += pc[strings.Index(pc, "  - name: pause"):]
	v, err := b.gatewayChild("profiles", cfg)
	if err != nil {
		return err
	}
	defer v.Stop(10 * time.Second)
	secs := b.n(2, 5)

	sessionsOp := func(ss []*session, op func(ctx context.Context, s *session, i int) error) func(ctx context.Context, w int) error {
		return func(ctx context.Context, w int) error { return op(ctx, ss[w], int(time.Now().UnixNano())) }
	}
	workloads := []profWorkload{
		{"echo", "echo through the gateway, 8 concurrent mcp-go sessions (scenario 1)",
			[]string{"server.(*Gateway).fastCall", "mcp-go/server.(*StreamableHTTPServer).handlePost", "backends.(*Conn).callTool", "backends.(*rawSession).callTool", "backends.(*h1Pool).do", "mcp-go/client.(*Client).CallTool", "encoding/json.Unmarshal", "encoding/json.Marshal", "syscall.Syscall", "runtime.gcBgMarkWorker"}, 8,
			func() (func(context.Context, int) error, func(), error) {
				ss, err := dialN(ctx, 8, v.URL, eraLegacy)
				if err != nil {
					return nil, nil, err
				}
				return sessionsOp(ss, func(ctx context.Context, s *session, i int) error {
					return callEcho(ctx, s.Client, "echo_echo", fmt.Sprint("p-", i), 0)
				}), func() { closeAll(ss) }, nil
			}},
		{"chain", "chain of 50 echo steps, service time 0, one call at a time (scenario 3)",
			[]string{"backends.(*Conn).callTool", "engine.(*runState).loop", "bbolt.(*DB).Update", "engine.(*runState).persist", "backends.(*h1Pool).do", "encoding/json.Marshal", "encoding/json.Unmarshal", "syscall.Syscall"}, 1,
			func() (func(context.Context, int) error, func(), error) {
				ss, err := dialN(ctx, 1, v.URL, eraLegacy)
				if err != nil {
					return nil, nil, err
				}
				return sessionsOp(ss, func(ctx context.Context, s *session, i int) error {
					msg := fmt.Sprint("c-", i)
					res, err := callTool(ctx, s, "chain_50", map[string]any{"msg": msg, "sleep_ms": 0})
					if err != nil {
						return err
					}
					return checkStructured(res, map[string]any{"msg": msg})
				}), func() { closeAll(ss) }, nil
			}},
		{"fan", "fan-out of 32 echo calls with a 10 ms service time, one call at a time (scenario 3)",
			[]string{"engine.(*Engine).forEach", "backends.(*rawSession).callTool", "bbolt.(*DB).Update", "backends.(*h1Pool).do", "server.(*Gateway).callComposite", "runtime.findRunnable", "runtime.gcBgMarkWorker", "syscall.Syscall"}, 1,
			func() (func(context.Context, int) error, func(), error) {
				ss, err := dialN(ctx, 1, v.URL, eraLegacy)
				if err != nil {
					return nil, nil, err
				}
				return sessionsOp(ss, func(ctx context.Context, s *session, i int) error {
					items := make([]any, 32)
					for k := range items {
						items[k] = fmt.Sprintf("f-%d-%d", i, k)
					}
					res, err := callTool(ctx, s, "fan", map[string]any{"items": items, "sleep_ms": 10})
					if err != nil {
						return err
					}
					return checkStructured(res, map[string]any{"msgs": items})
				}), func() { closeAll(ss) }, nil
			}},
		{"pause", "pause + resume cycles, 16 concurrent 2026-07-28 clients (scenario 4)",
			[]string{"bbolt.(*DB).Update", "encoding/json.Unmarshal", "state.decodeDoc", "bbolt.(*Tx).Commit", "syscall.Fdatasync", "server.(*Gateway).callComposite", "engine.DecodeCheckpoint", "encoding/json.Marshal", "syscall.Syscall", "runtime.gcBgMarkWorker"}, 16,
			func() (func(context.Context, int) error, func(), error) {
				ss := make([]*session, 16)
				for i := range ss {
					s, err := dial(ctx, v.URL, eraModern, client.WithElicitationHandler(accepter{}))
					if err != nil {
						closeAll(ss)
						return nil, nil, err
					}
					ss[i] = s
				}
				return sessionsOp(ss, func(ctx context.Context, s *session, i int) error {
					tag := fmt.Sprint("t-", i)
					res, err := callTool(ctx, s, "pause", map[string]any{"tag": tag})
					if err != nil {
						return err
					}
					return checkStructured(res, map[string]any{"tag": tag, "ok": true})
				}), func() { closeAll(ss) }, nil
			}},
	}
	var body strings.Builder
	fmt.Fprintf(&body, "CPU profiles of the gateway (the bench's `gateway` child: `server.New` + `Start` + `Handler`, as `vmcp serve` runs them, plus net/http/pprof), "+
		"%d s per workload, taken while the workload runs. `flat` is time in the function itself, `cum` includes what it calls. "+
		"Profiles are not kept; rerun with `--keep` to find them in the scratch directory. "+
		"The tools/list profile (5,000 tools) is in scenario 2.\n\n", secs)
	for _, w := range workloads {
		md, err := b.profileOne(ctx, v, secs, w)
		if err != nil {
			return err
		}
		body.WriteString(md)
	}
	b.rep.addSection(sc, "Profiles", body.String())
	return nil
}

// profWorkload is a workload to profile: setup returns the operation each
// of conc workers repeats, and a cleanup.
type profWorkload struct {
	name, what string
	keys       []string // functions whose cumulative share the summary names
	conc       int
	setup      func() (op func(ctx context.Context, w int) error, cleanup func(), err error)
}

// profileOne profiles the gateway child v for secs seconds while w runs,
// returns the markdown and notes the profile in the targets that refer
// to it ("Profiles → <name>").
func (b *bench) profileOne(ctx context.Context, v *vmcpProc, secs int, w profWorkload) (string, error) {
	op, cleanup, err := w.setup()
	if err != nil {
		return "", fmt.Errorf("profile %s: %w", w.name, err)
	}
	path := filepath.Join(v.Dir, w.name+".pprof")
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fetchProfile(v.Base, secs, path); cancel() }()
	l := runLoad(pctx, w.conc, 2, time.Hour, 0, 0, op)
	perr := <-done
	cancel()
	cleanup()
	if perr != nil {
		return "", fmt.Errorf("%s profile: %w", w.name, perr)
	}
	if l.Err != nil && ctx.Err() == nil && !strings.Contains(l.Err.Error(), "context canceled") {
		return "", fmt.Errorf("%s workload: %w", w.name, l.Err)
	}
	top, _ := pprofTop(path, "-nodecount=14")
	cum, summary := pprofTop(path, "-cum", "-nodecount=30")
	all, _ := pprofTop(path, "-cum", "-nodecount=1000")
	var sh, short []string
	for i, k := range w.keys {
		if pc := cumShare(all, k); pc != "" {
			sh = append(sh, fmt.Sprintf("`%s` %s", k, pc))
			if i < 3 {
				short = append(short, fmt.Sprintf("%s %s", k, pc))
			}
		}
	}
	if m := samplePct.FindStringSubmatch(summary); m != nil {
		short = append(short, "gateway CPU = "+m[1]+"% of one core over the wall time")
	}
	ref := "Profiles → " + w.name
	for i := range b.rep.Targets {
		t := &b.rep.Targets[i]
		t.Note = strings.ReplaceAll(t.Note, ref, ref+": "+strings.Join(short, ", "))
	}
	b.rep.addCell(Cell{Scenario: "profiles", Name: "profile " + w.name, N: l.N(), Valid: true})
	return fmt.Sprintf("### %s\n\n%s; %d operations during the profile; %s.\n\nShare of the gateway's CPU samples (cumulative): %s.\n\n<details><summary>top by flat time</summary>\n\n```\n%s```\n</details>\n\n<details><summary>top by cumulative time</summary>\n\n```\n%s```\n</details>\n\n",
		w.name, w.what, l.N(), summary, strings.Join(sh, ", "), top, cum), nil
}

var samplePct = regexp.MustCompile(`Total samples = [^(]*\(([\d.]+)%\)`)

func fetchProfile(base string, secs int, path string) error {
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("HTTP %s: %s", resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop is `go tool pprof -top` of a profile, without the header
// noise, and the "Duration: …, Total samples = …" line.
func pprofTop(path string, args ...string) (string, string) {
	out, err := exec.Command("go", append(append([]string{"tool", "pprof", "-top"}, args...), path)...).CombinedOutput()
	if err != nil {
		return "pprof failed: " + err.Error() + "\n" + string(out), ""
	}
	var keep []string
	summary := ""
	for _, l := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(l, "Duration: "); ok {
			summary = "wall " + d + " (a sample % over 100 means more than one core)"
			continue
		}
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), summary
}

// cumShare finds the first function containing name in a -cum listing and
// returns its cum%.
func cumShare(listing, name string) string {
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.Contains(f[len(f)-1], name) {
			return f[4]
		}
	}
	return ""
}
