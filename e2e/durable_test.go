package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/vmcp-dev/vmcp/state"
)

// Durable runs end to end (SPEC §5): runs that wait for a human survive a
// SIGKILL and a restart, are answered through every surface, resume tokens
// are single use, and deadlines fire even if they passed while vmcp was
// down.

// ---------------------------------------------------------------------------
// A backend whose tools block while told to, and count their calls

// slowBackend is an MCP server in the test process with three tools
// that block while hold is set: "read" (readOnlyHint), "upsert"
// (idempotentHint, not read-only) and "write" (neither). Calls are
// counted per tool and tag.
type slowBackend struct {
	url      string
	hold     atomic.Bool
	inflight atomic.Int32
	// killOnCall, when set, is a process group that the next call
	// SIGKILLs the moment it arrives.
	killOnCall atomic.Int64
	release    chan struct{}

	mu    sync.Mutex
	calls map[string]int // "read/<tag>" → calls
}

func newSlowBackend(t *testing.T) *slowBackend {
	t.Helper()
	b := &slowBackend{release: make(chan struct{}), calls: map[string]int{}}
	yes, no := true, false
	schema := json.RawMessage(`{"type":"object","properties":{"tag":{"type":"string"}},"required":["tag"]}`)
	read := mcp.NewToolWithRawSchema("read", "Reads slowly (read-only).", schema)
	read.Annotations = mcp.ToolAnnotation{ReadOnlyHint: &yes, OpenWorldHint: &no}
	upsert := mcp.NewToolWithRawSchema("upsert", "Writes slowly (idempotent, not read-only).", schema)
	upsert.Annotations = mcp.ToolAnnotation{ReadOnlyHint: &no, IdempotentHint: &yes, DestructiveHint: &no, OpenWorldHint: &no}
	write := mcp.NewToolWithRawSchema("write", "Writes slowly (neither read-only nor idempotent).", schema)
	write.Annotations = mcp.ToolAnnotation{ReadOnlyHint: &no, IdempotentHint: &no, DestructiveHint: &yes, OpenWorldHint: &no}
	s := mcpserver.NewMCPServer("e2e-slow", "1.0.0", mcpserver.WithToolCapabilities(true))
	s.AddTools(
		mcpserver.ServerTool{Tool: read, Handler: b.handler("read")},
		mcpserver.ServerTool{Tool: upsert, Handler: b.handler("upsert")},
		mcpserver.ServerTool{Tool: write, Handler: b.handler("write")},
	)
	srv := httptest.NewServer(mcpserver.NewStreamableHTTPServer(s))
	t.Cleanup(func() {
		close(b.release)
		srv.Close()
	})
	b.url = srv.URL + "/mcp"
	return b
}

func (b *slowBackend) handler(tool string) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		tag := req.GetString("tag", "")
		b.mu.Lock()
		b.calls[tool+"/"+tag]++
		b.mu.Unlock()
		if pg := b.killOnCall.Swap(0); pg > 0 {
			_ = syscall.Kill(-int(pg), syscall.SIGKILL)
		}
		b.inflight.Add(1)
		defer b.inflight.Add(-1)
		for b.hold.Load() {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-b.release:
				return nil, fmt.Errorf("test over")
			case <-time.After(20 * time.Millisecond):
			}
		}
		return mcp.NewToolResultText(tool + " " + tag), nil
	}
}

func (b *slowBackend) count(tool, tag string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[tool+"/"+tag]
}

// ---------------------------------------------------------------------------
// Config and workflows

// slowWorkflows are the workflows that call the slow backend: a
// read-only step, a write whose failure aborts, and a write whose failure
// is tolerated (on_error: continue).
var slowWorkflows = map[string]string{
	"slow_read.yaml": `name: wf_read
description: Read slowly, then file a ticket.
parameters:
  type: object
  properties: {tag: {type: string}}
  required: [tag]
steps:
  - id: fetch
    tool: slow.read
    arguments: {tag: "{{ params.tag }}"}
    timeout: 2m
  - id: file
    tool: tickets.create
    arguments:
      title: "slow read {{ params.tag }}"
      body: "{{ steps.fetch.output.text }}"
output:
  fetched: "{{ steps.fetch.output.text }}"
  ticket: "{{ steps.file.output.id }}"
`,
	"slow_upsert.yaml": `name: wf_upsert
description: Upsert slowly (idempotent), then file a ticket.
parameters:
  type: object
  properties: {tag: {type: string}}
  required: [tag]
steps:
  - id: write
    tool: slow.upsert
    arguments: {tag: "{{ params.tag }}"}
    timeout: 2m
  - id: file
    tool: tickets.create
    arguments:
      title: "slow upsert {{ params.tag }}"
      body: "{{ steps.write.output.text }}"
output:
  written: "{{ steps.write.output.text }}"
  ticket: "{{ steps.file.output.id }}"
`,
	"slow_write.yaml": `name: wf_write
description: Write slowly (a failure aborts), then file a ticket.
parameters:
  type: object
  properties: {tag: {type: string}}
  required: [tag]
steps:
  - id: write
    tool: slow.write
    arguments: {tag: "{{ params.tag }}"}
    timeout: 2m
  - id: file
    tool: tickets.create
    arguments:
      title: "slow write {{ params.tag }}"
      body: "{{ steps.write.output.text }}"
output:
  written: "{{ steps.write.output.text }}"
  ticket: "{{ steps.file.output.id }}"
`,
	"slow_write_soft.yaml": `name: wf_write_soft
description: Write slowly (a failure is tolerated), then file a ticket.
parameters:
  type: object
  properties: {tag: {type: string}}
  required: [tag]
steps:
  - id: write
    tool: slow.write
    arguments: {tag: "{{ params.tag }}"}
    timeout: 2m
    on_error: continue
    default_output: {text: "not written"}
  - id: file
    tool: tickets.create
    arguments:
      title: "slow write {{ params.tag }}"
      body: "{{ steps.write.output.text }}"
output:
  written: "{{ steps.write.output.text }}"
  write_status: "{{ steps.write.status }}"
  ticket: "{{ steps.file.output.id }}"
`,
}

// questionWorkflow is a workflow that asks one question with the given
// timeout (on_cancel: continue) and then files a ticket.
func questionWorkflow(name, timeout string) string {
	return fmt.Sprintf(`name: %s
description: Ask once (timeout %s), then file a ticket whatever the answer.
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
      properties:
        ok: {type: boolean, title: Proceed}
      required: [ok]
    timeout: %s
    on_decline: continue
    on_cancel: continue
  - id: after
    tool: tickets.create
    arguments:
      title: "after {{ params.tag }}"
      body: "answer: {{ steps.ask.action }}"
output:
  action: "{{ steps.ask.action }}"
  ticket: "{{ steps.after.output.id }}"
`, name, timeout, timeout)
}

// durableConfig writes a workflows directory (investigate_incident plus
// extra) and returns a config serving the six demo backends in process,
// the slow backend when slowURL is set, and those workflows.
func durableConfig(t *testing.T, slowURL string, extra map[string]string) string {
	t.Helper()
	cfg, _ := durableSetup(t, slowURL, extra)
	return cfg
}

// durableSetup is durableConfig that also returns the workflows
// directory.
func durableSetup(t *testing.T, slowURL string, extra map[string]string) (cfg, wfDir string) {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(moduleRoot, "workflows", "investigate_incident.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"investigate_incident.yaml": string(src)}
	for k, v := range extra {
		files[k] = v
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var sb strings.Builder
	sb.WriteString("name: e2e-durable\nbackends:\n")
	for _, b := range demoOrder {
		fmt.Fprintf(&sb, "  - {name: %s, builtin: %s}\n", b, b)
	}
	if slowURL != "" {
		fmt.Fprintf(&sb, "  - {name: slow, url: %q, timeout: 2m}\n", slowURL)
	}
	fmt.Fprintf(&sb, "workflows: [%q]\n%s", filepath.Join(dir, "*.yaml"), fastHealth)
	if durableDriver == "postgres" {
		sb.WriteString(postgresState(t, "2s", "e2e-replica"))
	}
	return sb.String(), dir
}

// restartVMCP starts `vmcp serve` again with the config and state file of
// a stopped one, on a fresh port, and waits for /readyz.
func restartVMCP(t *testing.T, old *proc) *proc {
	t.Helper()
	if !old.Exited() {
		t.Fatal("restartVMCP: the old process is still running")
	}
	cfgPath := filepath.Join(old.dir, "vmcp.yaml")
	var p *proc
	for attempt := 0; ; attempt++ {
		p = launch(t, cfgPath, freeAddr(t))
		err := p.waitReady(60 * time.Second)
		if err == nil {
			break
		}
		p.kill()
		if attempt == 0 && strings.Contains(p.Stderr(), "address already in use") {
			continue
		}
		t.Fatalf("vmcp serve did not become ready after the restart: %v\nstderr:\n%s", err, p.Stderr())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("restarted vmcp serve %s stderr (tail):\n%s", p.Addr, tail(p.Stderr(), 30000))
		}
		if p.Exited() {
			return
		}
		if err := p.stop(15 * time.Second); err != nil {
			t.Errorf("shutting down vmcp serve: %v\nstderr:\n%s", err, p.Stderr())
		}
		checkNoRace(t, p)
	})
	return p
}

func statePath(p *proc) string { return filepath.Join(p.dir, "state.db") }

// checkStateFile opens a stopped vmcp's state file, checks it and hands
// the store to fn before closing it.
func checkStateFile(t *testing.T, p *proc, fn func(state.Driver)) {
	t.Helper()
	if durableDriver == "postgres" {
		checkPostgresState(t, p, fn)
		return
	}
	st, err := state.Open(statePath(p), &state.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("state.Open after the stop: %v", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the state file: %v", err)
		}
	}()
	if err := st.Check(); err != nil {
		t.Errorf("the state file is inconsistent: %v", err)
	}
	if fn != nil {
		fn(st)
	}
}

// ---------------------------------------------------------------------------
// Reading results and runs

// runMeta returns a result's _meta["vmcp/run"].
func runMeta(res *mcp.CallToolResult) map[string]any {
	if res == nil || res.Meta == nil {
		return nil
	}
	m, _ := res.Meta.AdditionalFields["vmcp/run"].(map[string]any)
	return m
}

// pausedID checks a paused result and returns its run id.
func pausedID(res *mcp.CallToolResult, step string) (string, error) {
	if res.IsError {
		return "", fmt.Errorf("isError result: %s", text(res))
	}
	m := runMeta(res)
	id, _ := m["id"].(string)
	// "r_" and 128 random bits in base64url.
	if m == nil || m["status"] != "waiting" || m["step"] != step || !runIDPattern.MatchString(id) {
		return "", fmt.Errorf("not a paused result for step %s: _meta %v, text %q", step, m, text(res))
	}
	if _, ok := m["schema"]; !ok || m["message"] == "" {
		return "", fmt.Errorf("paused result without message or schema: %v", m)
	}
	if s := text(res); !strings.Contains(s, id) || !strings.Contains(s, "vmcp_run_resume") {
		return "", fmt.Errorf("paused text does not say how to resume run %s: %q", id, s)
	}
	return id, nil
}

var runIDPattern = regexp.MustCompile(`^r_[A-Za-z0-9_-]{22}$`)

// report decodes a result's text as the JSON object it carries.
func report(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(text(res)), &m); err != nil {
		t.Fatalf("result text is not a JSON object (isError %v): %q", res.IsError, text(res))
	}
	return m
}

// runView is the part of GET /api/v1/runs/{id} (and vmcp_run_get) the
// tests read.
type runView struct {
	ID       string         `json:"id"`
	Workflow string         `json:"workflow"`
	Status   string         `json:"status"`
	Updated  string         `json:"updated"`
	Output   map[string]any `json:"output"`
	Error    string         `json:"error"`
	Question *struct {
		Step     string          `json:"step"`
		Message  string          `json:"message"`
		Schema   json.RawMessage `json:"schema"`
		Deadline *string         `json:"deadline"`
	} `json:"question"`
	Interrupted *struct {
		InFlight      []string        `json:"in_flight"`
		NeedsDecision []string        `json:"needs_decision"`
		Message       string          `json:"message"`
		Schema        json.RawMessage `json:"schema"`
	} `json:"interrupted"`
	Steps   map[string]map[string]any `json:"steps"`
	History []struct {
		At     string          `json:"at"`
		Who    string          `json:"who"`
		Kind   string          `json:"kind"`
		Step   string          `json:"step"`
		Detail json.RawMessage `json:"detail"`
	} `json:"history"`
}

// kinds counts the history's events by kind.
func (v *runView) kinds() map[string]int {
	out := map[string]int{}
	for _, h := range v.History {
		out[h.Kind]++
	}
	return out
}

func (v *runView) historyString() string {
	var parts []string
	for _, h := range v.History {
		s := h.Kind
		if h.Step != "" {
			s += " " + h.Step
		}
		if h.Who != "" {
			s += " by " + h.Who
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// apiDo sends one request to the HTTP API (with a bearer token unless
// it is empty) and returns the status and body.
func apiDo(t *testing.T, p *proc, bearer, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.Base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// apiRun reads GET /api/v1/runs/{id}.
func apiRun(t *testing.T, p *proc, id string) *runView { t.Helper(); return apiRunAs(t, p, "", id) }

func apiRunAs(t *testing.T, p *proc, bearer, id string) *runView {
	t.Helper()
	code, body := apiDo(t, p, bearer, http.MethodGet, "/api/v1/runs/"+id, "")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/runs/%s: %d %s", id, code, body)
	}
	var v runView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("GET /api/v1/runs/%s: %v: %s", id, err, body)
	}
	return &v
}

// toolRun reads a run through vmcp_run_get.
func toolRun(t *testing.T, c *mcpClient, id string) *runView {
	t.Helper()
	res := c.mustCall(t, "vmcp_run_get", fmt.Sprintf(`{"run_id":%q}`, id))
	var v runView
	if err := json.Unmarshal([]byte(text(res)), &v); err != nil {
		t.Fatalf("vmcp_run_get %s: %v: %s", id, err, text(res))
	}
	return &v
}

// listRuns lists runs through vmcp_runs_list, following cursors.
func listRuns(t *testing.T, c *mcpClient, status, workflow string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	cursor := ""
	for page := 0; page < 100; page++ {
		args := map[string]any{"limit": 10}
		if status != "" {
			args["status"] = status
		}
		if workflow != "" {
			args["workflow"] = workflow
		}
		if cursor != "" {
			args["cursor"] = cursor
		}
		b, _ := json.Marshal(args)
		res := c.mustCall(t, "vmcp_runs_list", string(b))
		var l struct {
			Runs       []map[string]any `json:"runs"`
			NextCursor string           `json:"next_cursor"`
		}
		if err := json.Unmarshal([]byte(text(res)), &l); err != nil {
			t.Fatalf("vmcp_runs_list: %v: %s", err, text(res))
		}
		for _, r := range l.Runs {
			out[r["id"].(string)] = r
		}
		if cursor = l.NextCursor; cursor == "" {
			return out
		}
	}
	t.Fatal("vmcp_runs_list: more than 100 pages")
	return nil
}

// completedWithTicket checks that a run finished as completed with a
// report ticket, through GET /api/v1/runs/{id}, and returns the view.
func completedWithTicket(t *testing.T, p *proc, id string) *runView {
	t.Helper()
	v := apiRun(t, p, id)
	ticket, _ := v.Output["ticket"].(string)
	if v.Status != state.StatusCompleted || !strings.HasPrefix(ticket, "T-") {
		t.Errorf("run %s: status %s, output %v, error %q; want completed with a report ticket (history: %s)", id, v.Status, v.Output, v.Error, v.historyString())
	}
	return v
}

func investigate(t *testing.T, c *mcpClient) (*mcp.CallToolResult, error) {
	t.Helper()
	return c.call(t, "investigate_incident", `{"incident_id":"INC-1042"}`)
}

// startPaused starts investigate_incident on a client that cannot answer
// and returns the waiting run's id.
func startPaused(t *testing.T, c *mcpClient) string {
	t.Helper()
	res, err := investigate(t, c)
	if err != nil {
		t.Fatalf("investigate_incident: %v", err)
	}
	id, err := pausedID(res, "confirm_page")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ---------------------------------------------------------------------------
// 1. SIGKILL and restart

func TestKillAndRestart(t *testing.T) {
	slow := newSlowBackend(t)
	cfg, wfDir := durableSetup(t, slow.url, slowWorkflows)
	p := startVMCP(t, cfg)
	// A 2025-11-25 session that does not declare elicitation: every
	// question comes back as a paused result.
	c := connect(t, p.URL, legacy, false)

	const paused = 24
	var (
		mu        sync.Mutex
		pausedIDs []string
		errs      []string
	)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < paused/6; i++ {
				res, err := investigate(t, c)
				if err == nil {
					var id string
					if id, err = pausedID(res, "confirm_page"); err == nil {
						mu.Lock()
						pausedIDs = append(pausedIDs, id)
						mu.Unlock()
						continue
					}
				}
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls did not pause: %s", len(errs), paused, strings.Join(errs, "\n"))
	}
	t.Logf("%d investigate_incident runs paused in %s (6 concurrent callers)", paused, time.Since(start).Round(time.Millisecond))

	// Runs that are mid-step when vmcp dies: their backend calls block.
	slow.hold.Store(true)
	midStep := map[string]string{ // tag → workflow
		"ro-1": "wf_read", "ro-2": "wf_read",
		"rw-1": "wf_write", "rw-2": "wf_write",
		"soft-1": "wf_write_soft",
		"idem-1": "wf_upsert",
	}
	cs := connect(t, p.URL, legacy, false)
	inflight := make(chan error, len(midStep))
	for tag, wf := range midStep {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name = wf
			req.Params.Arguments = json.RawMessage(fmt.Sprintf(`{"tag":%q}`, tag))
			res, err := cs.CallTool(ctx, req)
			if err == nil {
				err = fmt.Errorf("%s %s returned although vmcp was killed mid-step: %s", wf, tag, text(res))
			} else {
				err = nil
			}
			inflight <- err
		}()
	}
	eventually(t, 30*time.Second, "all mid-step calls to reach the slow backend", func() bool {
		return int(slow.inflight.Load()) == len(midStep)
	})
	// The engine commits "in flight" only after it has handed the call to
	// a worker (TestKillAtCallArrival); give that commit a moment, so this
	// test checks the restart rules and not that window.
	time.Sleep(300 * time.Millisecond)

	p.kill() // SIGKILL, the whole process group
	for range midStep {
		select {
		case err := <-inflight:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a mid-step call did not end after vmcp was killed")
		}
	}

	// The file is consistent, and says what was going on.
	tags := map[string]string{} // run id → tag
	checkStateFile(t, p, func(st state.Driver) {
		ctx := t.Context()
		waiting, _, err := st.List(ctx, state.Filter{Status: state.StatusWaiting, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(waiting) != paused {
			t.Errorf("the state file has %d waiting runs after the kill, want %d", len(waiting), paused)
		}
		running, _, err := st.List(ctx, state.Filter{Status: state.StatusRunning, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(running) != len(midStep) {
			t.Errorf("the state file has %d running runs after the kill, want %d", len(running), len(midStep))
		}
		for _, r := range running {
			full, err := st.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			// A run is created with its first steps in flight (the
			// create commit precedes the first call), so each shows its
			// slow step; after the restart only the steps unsafe to
			// repeat wait for a decision (checked below).
			want := []string{"write"}
			if r.Workflow == "wf_read" {
				want = []string{"fetch"}
			}
			var params struct {
				Tag string `json:"tag"`
			}
			_ = json.Unmarshal(full.Params, &params)
			tags[r.ID] = params.Tag
			if len(full.InFlight) != len(want) || (len(want) > 0 && !slices.Equal(full.InFlight, want)) {
				t.Errorf("run %s (%s): in flight %v in the state file, want %v", r.ID, r.Workflow, full.InFlight, want)
			}
		}
	})

	// The workflow file changes while vmcp is down: runs that started
	// before keep the definition they started with (SPEC §5), new runs
	// get the new one.
	wfFile := filepath.Join(wfDir, "investigate_incident.yaml")
	src, err := os.ReadFile(wfFile)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(src), "output:\n", "output:\n  revision: \"v2\"\n", 1)
	changed = strings.Replace(changed, "output_schema:\n  type: object\n  properties:\n", "output_schema:\n  type: object\n  properties:\n    revision: {type: string}\n", 1)
	if changed == string(src) || strings.Count(changed, "revision") != 2 {
		t.Fatal("could not change investigate_incident.yaml")
	}
	if err := os.WriteFile(wfFile, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}

	slow.hold.Store(false)
	restarted := time.Now()
	p2 := restartVMCP(t, p)
	t.Logf("restart to /readyz: %s", time.Since(restarted).Round(time.Millisecond))
	c2 := connect(t, p2.URL, legacy, false)

	// Every paused run is listed, with its question.
	listed := listRuns(t, c2, state.StatusWaiting, "")
	for _, id := range pausedIDs {
		r, ok := listed[id]
		if !ok {
			t.Errorf("paused run %s is not listed as waiting after the restart", id)
			continue
		}
		if r["step"] != "confirm_page" || !strings.Contains(fmt.Sprint(r["message"]), "Page the on-call") {
			t.Errorf("run %s listed without its question: %v", id, r)
		}
	}
	if len(listed) != paused {
		t.Errorf("vmcp_runs_list {status: waiting} lists %d runs, want %d", len(listed), paused)
	}

	// Each is answered through vmcp_run_resume and completes; half page
	// the on-call engineer.
	for i, id := range pausedIDs {
		v := toolRun(t, c2, id)
		if v.Status != state.StatusWaiting || v.Question == nil || v.Question.Step != "confirm_page" ||
			!strings.Contains(v.Question.Message, "checkout") || !strings.Contains(string(v.Question.Schema), `"page"`) {
			t.Errorf("vmcp_run_get %s after the restart: status %s, question %+v", id, v.Status, v.Question)
			continue
		}
		page := i%2 == 0
		res := c2.mustCall(t, "vmcp_run_resume", fmt.Sprintf(`{"run_id":%q,"action":"accept","content":{"page":%v,"note":"after the restart"}}`, id, page))
		out := report(t, res)
		if ticket, _ := out["ticket"].(string); !strings.HasPrefix(ticket, "T-") || out["paged"] != page {
			t.Errorf("run %s resumed with page=%v: %v", id, page, out)
		}
		if _, ok := out["revision"]; ok {
			t.Errorf("run %s started before the workflow changed but resumed with the new definition: %v", id, out)
		}
		if m := runMeta(res); m["id"] != id || m["status"] != "completed" {
			t.Errorf("run %s: resume result _meta %v", id, m)
		}
		v = completedWithTicket(t, p2, id)
		if k := v.kinds(); k["paused"] != 1 || k["answered"] != 1 || k["completed"] != 1 {
			t.Errorf("run %s history: %s", id, v.historyString())
		}
	}

	// A run started after the restart uses the changed file.
	ans := &elicitor{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"page": false}}
	cl := connect(t, p2.URL, legacy, false, client.WithElicitationHandler(ans))
	if out := report(t, cl.mustCall(t, "investigate_incident", `{"incident_id":"INC-1042"}`)); out["revision"] != "v2" {
		t.Errorf("a new run after the change: %v; want revision v2", out)
	}

	// The mid-step runs are interrupted.
	interrupted := listRuns(t, c2, state.StatusInterrupted, "")
	if len(interrupted) != len(midStep) {
		t.Fatalf("%d interrupted runs after the restart, want %d: %v", len(interrupted), len(midStep), interrupted)
	}
	byTag := map[string]*runView{}
	for id := range interrupted {
		byTag[tags[id]] = toolRun(t, c2, id)
	}
	for tag, wf := range midStep {
		v := byTag[tag]
		if v == nil {
			t.Fatalf("no interrupted run for %s %s (have %v)", wf, tag, keys(byTag))
		}
		if v.Workflow != wf || v.Status != state.StatusInterrupted || v.Interrupted == nil {
			t.Errorf("run %s: workflow %s, status %s, interrupted %+v", v.ID, v.Workflow, v.Status, v.Interrupted)
			continue
		}
		if k := v.kinds(); k["interrupted"] != 1 {
			t.Errorf("run %s: no interrupted event in its history: %s", v.ID, v.historyString())
		}
		unsafe := wf == "wf_write" || wf == "wf_write_soft"
		if got := len(v.Interrupted.NeedsDecision) > 0; got != unsafe {
			t.Errorf("run %s (%s): needs_decision %v, want a decision: %v", v.ID, wf, v.Interrupted.NeedsDecision, unsafe)
		}
		if unsafe && !strings.Contains(v.Interrupted.Message, "rerun") {
			t.Errorf("run %s: the interrupted message does not explain the decision: %q", v.ID, v.Interrupted.Message)
		}
		if n := slow.count(toolOf(wf), tag); n != 1 {
			t.Errorf("%s %s: the slow tool was called %d times before the resume, want 1", wf, tag, n)
		}
	}

	resume := func(id, args string) *mcp.CallToolResult {
		t.Helper()
		res, err := c2.call(t, "vmcp_run_resume", fmt.Sprintf(`{"run_id":%q%s}`, id, args))
		if err != nil {
			t.Fatalf("vmcp_run_resume %s: %v", id, err)
		}
		return res
	}

	// Read-only: resumed without a decision, the step runs again once.
	ro := byTag["ro-1"]
	res := resume(ro.ID, `,"action":"accept"`)
	if res.IsError {
		t.Errorf("resuming the interrupted read-only run: %s", text(res))
	} else if out := report(t, res); out["fetched"] != "read ro-1" {
		t.Errorf("read-only run output %v", out)
	}
	if n := slow.count("read", "ro-1"); n != 2 {
		t.Errorf("the read-only tool was called %d times in all, want 2 (once before the kill, once on resume)", n)
	}
	v := completedWithTicket(t, p2, ro.ID)
	if k := v.kinds(); k["resumed"] != 1 {
		t.Errorf("run %s history: %s", ro.ID, v.historyString())
	}
	// The other read-only run is cancelled: nothing runs.
	c2.mustCall(t, "vmcp_run_cancel", fmt.Sprintf(`{"run_id":%q}`, byTag["ro-2"].ID))
	if v := apiRun(t, p2, byTag["ro-2"].ID); v.Status != state.StatusCancelled {
		t.Errorf("cancelled interrupted run: status %s", v.Status)
	}
	if n := slow.count("read", "ro-2"); n != 1 {
		t.Errorf("a cancelled interrupted run called its tool again (%d calls)", n)
	}

	// Idempotent: likewise, no decision needed.
	idem := byTag["idem-1"]
	res = resume(idem.ID, `,"action":"accept"`)
	if res.IsError {
		t.Errorf("resuming the interrupted idempotent run: %s", text(res))
	} else if out := report(t, res); out["written"] != "upsert idem-1" {
		t.Errorf("idempotent run output %v", out)
	}
	if n := slow.count("upsert", "idem-1"); n != 2 {
		t.Errorf("the idempotent tool was called %d times in all, want 2", n)
	}
	completedWithTicket(t, p2, idem.ID)

	// Neither: refused without an explicit decision.
	rw1 := byTag["rw-1"]
	for _, args := range []string{`,"action":"accept"`, `,"action":"accept","content":{}`} {
		res = resume(rw1.ID, args)
		if !res.IsError || !strings.Contains(text(res), "rerun") {
			t.Errorf("resume %s without a decision (%s): isError %v, %q; want a refusal that mentions rerun", rw1.ID, args, res.IsError, text(res))
		}
	}
	if v := apiRun(t, p2, rw1.ID); v.Status != state.StatusInterrupted {
		t.Errorf("a refused resume changed run %s to %s", rw1.ID, v.Status)
	}
	// rerun: false with on_error abort: the run fails, the tool is not
	// called again.
	res = resume(rw1.ID, `,"action":"accept","content":{"rerun":false}`)
	if !res.IsError || !strings.Contains(text(res), "write") {
		t.Errorf("resume %s with rerun false: isError %v, %q; want the run to fail naming step write", rw1.ID, res.IsError, text(res))
	}
	if v := apiRun(t, p2, rw1.ID); v.Status != state.StatusFailed || !strings.Contains(v.Error, "interrupted") {
		t.Errorf("run %s after rerun false: status %s, error %q; want failed (interrupted)", rw1.ID, v.Status, v.Error)
	}
	if n := slow.count("write", "rw-1"); n != 1 {
		t.Errorf("rerun false called the write tool again (%d calls in all)", n)
	}
	// rerun: true: the tool is called again, once.
	rw2 := byTag["rw-2"]
	res = resume(rw2.ID, `,"action":"accept","content":{"rerun":true}`)
	if res.IsError {
		t.Errorf("resume %s with rerun true: %s", rw2.ID, text(res))
	} else if out := report(t, res); out["written"] != "write rw-2" {
		t.Errorf("rerun true output %v", out)
	}
	if n := slow.count("write", "rw-2"); n != 2 {
		t.Errorf("rerun true: the write tool was called %d times in all, want 2", n)
	}
	completedWithTicket(t, p2, rw2.ID)
	// rerun: false with on_error continue: the step fails, the run goes
	// on with its default output.
	soft := byTag["soft-1"]
	res = resume(soft.ID, `,"action":"accept","content":{"rerun":false}`)
	if res.IsError {
		t.Errorf("resume %s with rerun false (on_error continue): %s", soft.ID, text(res))
	} else if out := report(t, res); out["written"] != "not written" || out["write_status"] != "failed" {
		t.Errorf("on_error continue after rerun false: %v", out)
	}
	if n := slow.count("write", "soft-1"); n != 1 {
		t.Errorf("rerun false (on_error continue) called the tool again (%d calls)", n)
	}
	completedWithTicket(t, p2, soft.ID)

	// Nothing waits or is interrupted any more, and the file is still
	// consistent after a clean stop.
	if l := listRuns(t, c2, state.StatusWaiting, ""); len(l) != 0 {
		t.Errorf("%d runs still waiting", len(l))
	}
	if l := listRuns(t, c2, state.StatusInterrupted, ""); len(l) != 0 {
		t.Errorf("%d runs still interrupted", len(l))
	}
	if err := p2.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkNoRace(t, p2)
	checkStateFile(t, p2, nil)
}

// TestKillAtCallArrival SIGKILLs vmcp the moment the backend receives
// the call of a step that is neither read-only nor idempotent, several
// times. SPEC §5 asks for an explicit decision before such a step runs
// again after a crash, so the store must know the step may have run: it
// must record the step as in flight before the call can reach the
// backend. A round where it does not is followed through: restart and a
// resume without a decision.
func TestKillAtCallArrival(t *testing.T) {
	slow := newSlowBackend(t)
	cfg := durableConfig(t, slow.url, slowWorkflows)
	const rounds = 20
	for i := range rounds {
		slow.hold.Store(true)
		p := startVMCP(t, cfg) // a fresh directory and state file each round
		c := connect(t, p.URL, legacy, false)
		tag := fmt.Sprintf("k-%d", i)
		slow.killOnCall.Store(int64(p.Pid()))
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name = "wf_write"
			req.Params.Arguments = json.RawMessage(fmt.Sprintf(`{"tag":%q}`, tag))
			_, _ = c.CallTool(ctx, req)
		}()
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("the backend's kill did not take vmcp down")
		}
		var id string
		var inFlight []string
		checkStateFile(t, p, func(st state.Driver) {
			l, _, err := st.List(t.Context(), state.Filter{Status: state.StatusRunning})
			if err != nil || len(l) != 1 {
				t.Fatalf("round %d: %d running runs in the state file (%v), want 1", i, len(l), err)
			}
			r, err := st.Get(t.Context(), l[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			id, inFlight = r.ID, r.InFlight
		})
		if slices.Contains(inFlight, "write") {
			continue
		}
		// The backend got the call, the store does not know.
		slow.hold.Store(false)
		p2 := restartVMCP(t, p)
		c2 := connect(t, p2.URL, legacy, false)
		v := toolRun(t, c2, id)
		res, err := c2.call(t, "vmcp_run_resume", fmt.Sprintf(`{"run_id":%q,"action":"accept"}`, id))
		outcome := ""
		if err != nil {
			outcome = err.Error()
		} else {
			outcome = fmt.Sprintf("isError %v: %s", res.IsError, text(res))
		}
		t.Fatalf("round %d: vmcp was killed when the backend received the call of step write (not read-only, not idempotent), "+
			"but the state file recorded no step in flight (in_flight %v): the checkpoint is committed after the call is dispatched. "+
			"After the restart the run was %s with needs_decision %v, a resume without a decision gave %s, and the write tool was called %d times",
			i, inFlight, v.Status, interruptedDecision(v), outcome, slow.count("write", tag))
	}
	t.Logf("in %d rounds, every kill at the call's arrival found the step recorded as in flight", rounds)
}

func interruptedDecision(v *runView) []string {
	if v.Interrupted == nil {
		return nil
	}
	return v.Interrupted.NeedsDecision
}

func toolOf(workflow string) string {
	switch workflow {
	case "wf_read":
		return "read"
	case "wf_upsert":
		return "upsert"
	}
	return "write"
}

// ---------------------------------------------------------------------------
// 2. The same paused run answered through every surface

func TestSameRunEverySurface(t *testing.T) {
	p := startVMCP(t, durableConfig(t, "", nil)+"elicitation: {live_wait: 1s}\n")

	// finish checks the end of every surface: completed, a report
	// ticket, one question asked and one answer recorded.
	finish := func(t *testing.T, id string) {
		t.Helper()
		v := completedWithTicket(t, p, id)
		if k := v.kinds(); k["paused"] != 1 || k["answered"] != 1 || k["completed"] != 1 {
			t.Errorf("run %s history: %s; want one pause, one answer, completed", id, v.historyString())
		}
		for _, h := range v.History {
			if h.Kind == "answered" && (h.Who != "anonymous" || h.Step != "confirm_page" || !strings.Contains(string(h.Detail), `"page":false`)) {
				t.Errorf("run %s: the answer is not recorded with who, step and what: %+v", id, h)
			}
		}
	}

	t.Run("mrtr", func(t *testing.T) {
		ans := &elicitor{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"page": false}}
		c := connect(t, p.URL, modern, false, client.WithElicitationHandler(ans))
		res := c.mustCall(t, "investigate_incident", `{"incident_id":"INC-1042"}`)
		out := report(t, res)
		if ticket, _ := out["ticket"].(string); !strings.HasPrefix(ticket, "T-") || out["paged"] != false {
			t.Errorf("report: %v", out)
		}
		inputRequired := 0
		for _, r := range c.tap.raw("tools/call") {
			if rawField(t, r, "resultType") == `"input_required"` {
				inputRequired++
			}
		}
		if inputRequired != 1 || ans.count() != 1 {
			t.Errorf("%d input_required results and %d answers, want exactly one of each", inputRequired, ans.count())
		}
		id, _ := runMeta(res)["id"].(string)
		finish(t, id)
	})

	t.Run("live", func(t *testing.T) {
		ans := &elicitor{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"page": false}}
		c := connect(t, p.URL, legacy, false, client.WithElicitationHandler(ans))
		res := c.mustCall(t, "investigate_incident", `{"incident_id":"INC-1042"}`)
		out := report(t, res)
		if ticket, _ := out["ticket"].(string); !strings.HasPrefix(ticket, "T-") {
			t.Errorf("report: %v", out)
		}
		if ans.count() != 1 || !strings.Contains(ans.last.Params.Message, "Page the on-call") {
			t.Errorf("elicitation/create: %d calls, last %q", ans.count(), ans.last.Params.Message)
		}
		for _, r := range c.tap.raw("tools/call") {
			if rawField(t, r, "resultType") == `"input_required"` {
				t.Errorf("a 2025-11-25 session got input_required")
			}
		}
		id, _ := runMeta(res)["id"].(string)
		finish(t, id)
	})

	t.Run("live_wait_ends", func(t *testing.T) {
		// A client that declared elicitation but does not answer within
		// the live wait gets the paused result; the run keeps waiting.
		slowAns := &stallingElicitor{}
		c := connect(t, p.URL, legacy, false, client.WithElicitationHandler(slowAns))
		start := time.Now()
		res, err := investigate(t, c)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		id, err := pausedID(res, "confirm_page")
		if err != nil {
			t.Fatal(err)
		}
		if took < time.Second || took > 10*time.Second || slowAns.calls.Load() != 1 {
			t.Errorf("paused result after %s with %d elicitation requests; want about the 1s live wait and one request", took, slowAns.calls.Load())
		}
		if v := apiRun(t, p, id); v.Status != state.StatusWaiting {
			t.Fatalf("after the live wait the run is %s", v.Status)
		}
		code, body := apiDo(t, p, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"page":false}}`)
		if code != http.StatusOK {
			t.Fatalf("POST resume: %d %s", code, body)
		}
		finish(t, id)
	})

	t.Run("tool_from_another_session", func(t *testing.T) {
		a := connect(t, p.URL, legacy, false)
		id := startPaused(t, a)
		b := connect(t, p.URL, legacy, false)
		if a.GetSessionId() == b.GetSessionId() || b.GetSessionId() == "" {
			t.Fatalf("the two clients share session %q", a.GetSessionId())
		}
		if _, ok := listRuns(t, b, state.StatusWaiting, "investigate_incident")[id]; !ok {
			t.Errorf("client B does not see run %s as waiting", id)
		}
		res := b.mustCall(t, "vmcp_run_resume", fmt.Sprintf(`{"run_id":%q,"action":"accept","content":{"page":false}}`, id))
		if ticket, _ := report(t, res)["ticket"].(string); !strings.HasPrefix(ticket, "T-") {
			t.Errorf("vmcp_run_resume result: %s", text(res))
		}
		finish(t, id)
	})

	t.Run("http_api", func(t *testing.T) {
		a := connect(t, p.URL, legacy, false)
		id := startPaused(t, a)
		resp, err := http.Post(p.Base+"/api/v1/runs/"+id+"/resume", "application/json",
			strings.NewReader(`{"action":"accept","content":{"page":false}}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST resume: %d %s", resp.StatusCode, body)
		}
		var v runView
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("POST resume: %v: %s", err, body)
		}
		if ticket, _ := v.Output["ticket"].(string); v.Status != state.StatusCompleted || !strings.HasPrefix(ticket, "T-") {
			t.Errorf("POST resume answered status %s, output %v", v.Status, v.Output)
		}
		// A second answer is a conflict, as JSON.
		resp, err = http.Post(p.Base+"/api/v1/runs/"+id+"/resume", "application/json",
			strings.NewReader(`{"action":"accept","content":{"page":true}}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if resp.StatusCode != http.StatusConflict || json.Unmarshal(body, &e) != nil || e.Error.Code == "" || !strings.Contains(e.Error.Message, "not waiting") {
			t.Errorf("second POST resume: %d %s; want 409 with a JSON error saying the run is not waiting", resp.StatusCode, body)
		}
		finish(t, id)
	})

	t.Run("cli", func(t *testing.T) {
		a := connect(t, p.URL, legacy, false)
		id := startPaused(t, a)
		cmd := exec.Command(vmcpBin, "runs", "resume", id, "--url", p.URL, "--action", "accept", "--content", `{"page":false}`)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Stdin = strings.NewReader("")
		if err := cmd.Run(); err != nil {
			t.Fatalf("vmcp runs resume: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		v := apiRun(t, p, id)
		ticket, _ := v.Output["ticket"].(string)
		if ticket == "" || !strings.Contains(stdout.String(), ticket) {
			t.Errorf("vmcp runs resume printed no report ticket (%q):\n%s\nstderr:\n%s", ticket, stdout.String(), stderr.String())
		}
		t.Logf("vmcp runs resume output:\n%s", stdout.String())
		finish(t, id)
	})
}

// twoQuestions asks twice (both answers fit both schemas), then files a
// ticket.
const twoQuestions = `name: two_questions
description: Ask twice, then file a ticket.
parameters:
  type: object
  properties: {tag: {type: string}}
  required: [tag]
steps:
  - id: ask1
    type: elicitation
    message: "First question for {{ params.tag }}: ok?"
    schema:
      type: object
      properties: {ok: {type: boolean}}
      required: [ok]
  - id: ask2
    type: elicitation
    depends_on: [ask1]
    message: "Second question for {{ params.tag }}: ok?"
    schema:
      type: object
      properties: {ok: {type: boolean}}
      required: [ok]
  - id: after
    tool: tickets.create
    depends_on: [ask2]
    arguments:
      title: "two questions {{ params.tag }}"
      body: "answered"
output:
  first: "{{ steps.ask1.content.ok ?? 'none' }}"
  second: "{{ steps.ask2.content.ok ?? 'none' }}"
  ticket: "{{ steps.after.output.id }}"
`

// TestSurfaceNextQuestion resumes a run whose workflow then asks a
// second question: the resume delivers the next question by the best
// means the resuming caller supports (SPEC §5), and each answer goes to
// its own question.
func TestSurfaceNextQuestion(t *testing.T) {
	p := startVMCP(t, durableConfig(t, "", map[string]string{"two_questions.yaml": twoQuestions}))
	starter := connect(t, p.URL, legacy, false)
	startTwo := func(t *testing.T, tag string) string {
		t.Helper()
		res, err := starter.call(t, "two_questions", fmt.Sprintf(`{"tag":%q}`, tag))
		if err != nil {
			t.Fatal(err)
		}
		id, err := pausedID(res, "ask1")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// check: the first answer was true, the second false.
	check := func(t *testing.T, id string) {
		t.Helper()
		v := completedWithTicket(t, p, id)
		if v.Output["first"] != true || v.Output["second"] != false {
			t.Errorf("run %s output %v: want first=true (the resume's answer) and second=false (the answer to the second question)", id, v.Output)
		}
		if k := v.kinds(); k["answered"] != 2 {
			t.Errorf("run %s history: %s; want two answers", id, v.historyString())
		}
	}
	resumeFirst := func(id string) string {
		return fmt.Sprintf(`{"run_id":%q,"action":"accept","content":{"ok":true}}`, id)
	}

	t.Run("paused_again", func(t *testing.T) {
		id := startTwo(t, "paused")
		c := connect(t, p.URL, legacy, false)
		res := c.mustCall(t, "vmcp_run_resume", resumeFirst(id))
		if got, err := pausedID(res, "ask2"); err != nil || got != id {
			t.Fatalf("resume without elicitation: want the paused result for ask2 of run %s: %v (%s)", id, err, text(res))
		}
		c.mustCall(t, "vmcp_run_resume", fmt.Sprintf(`{"run_id":%q,"action":"accept","content":{"ok":false}}`, id))
		check(t, id)
	})

	t.Run("live", func(t *testing.T) {
		id := startTwo(t, "live")
		ans := &elicitor{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"ok": false}}
		c := connect(t, p.URL, legacy, false, client.WithElicitationHandler(ans))
		res := c.mustCall(t, "vmcp_run_resume", resumeFirst(id))
		if ans.count() != 1 || !strings.Contains(ans.last.Params.Message, "Second question") {
			t.Errorf("the second question was asked %d times (last %q)", ans.count(), ans.last.Params.Message)
		}
		if out := report(t, res); out["second"] != false {
			t.Errorf("resume result %v", out)
		}
		check(t, id)
	})

	t.Run("mrtr_composite", func(t *testing.T) {
		// Both questions as input_required on one composite call.
		ans := &byMessage{answers: map[string]bool{"First question": true, "Second question": false}}
		c := connect(t, p.URL, modern, false, client.WithElicitationHandler(ans))
		res := c.mustCall(t, "two_questions", `{"tag":"mrtr-composite"}`)
		inputRequired := 0
		for _, r := range c.tap.raw("tools/call") {
			if rawField(t, r, "resultType") == `"input_required"` {
				inputRequired++
			}
		}
		if inputRequired != 2 || ans.calls.Load() != 2 {
			t.Errorf("%d input_required results and %d answers, want 2 of each", inputRequired, ans.calls.Load())
		}
		id, _ := runMeta(res)["id"].(string)
		check(t, id)
	})

	t.Run("mrtr", func(t *testing.T) {
		id := startTwo(t, "mrtr")
		ans := &elicitor{action: mcp.ElicitationResponseActionAccept, content: map[string]any{"ok": false}}
		c := connect(t, p.URL, modern, false, client.WithElicitationHandler(ans))
		res, err := c.call(t, "vmcp_run_resume", resumeFirst(id))
		if err != nil {
			t.Fatalf("vmcp_run_resume: %v", err)
		}
		if ans.count() != 1 || !strings.Contains(ans.last.Params.Message, "Second question") {
			t.Errorf("the second question was asked %d times (last %q)", ans.count(), ans.last.Params.Message)
		}
		t.Logf("vmcp_run_resume on a 2026-07-28 client: isError %v, %s", res.IsError, text(res))
		check(t, id)
	})

	t.Run("http_api", func(t *testing.T) {
		id := startTwo(t, "http")
		code, body := apiDo(t, p, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"ok":true}}`)
		var v runView
		if code != http.StatusOK || json.Unmarshal(body, &v) != nil || v.Status != state.StatusWaiting || v.Question == nil || v.Question.Step != "ask2" {
			t.Fatalf("POST resume: %d %s; want the run waiting on ask2", code, body)
		}
		code, body = apiDo(t, p, "", http.MethodPost, "/api/v1/runs/"+id+"/resume", `{"action":"accept","content":{"ok":false}}`)
		if code != http.StatusOK {
			t.Fatalf("second POST resume: %d %s", code, body)
		}
		check(t, id)
	})
}

// byMessage accepts each question with {"ok": v}, v chosen by a
// substring of the question's message.
type byMessage struct {
	answers map[string]bool
	calls   atomic.Int32
}

func (e *byMessage) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	e.calls.Add(1)
	for sub, v := range e.answers {
		if strings.Contains(req.Params.Message, sub) {
			return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"ok": v}}}, nil
		}
	}
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionDecline}}, nil
}

// stallingElicitor never answers (until the request is cancelled).
type stallingElicitor struct{ calls atomic.Int32 }

func (e *stallingElicitor) Elicit(ctx context.Context, _ mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	e.calls.Add(1)
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Second):
	}
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionCancel}}, nil
}

// ---------------------------------------------------------------------------
// 3. Resume tokens

// injector is a streamable-HTTP transport that sets fields of the next
// tools/call's params (a retry with a chosen requestState), after the
// client has added its own _meta and headers.
type injector struct {
	*transport.StreamableHTTP
	mu   sync.Mutex
	next map[string]any
}

func (i *injector) SendRequest(ctx context.Context, r transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	if r.Method == string(mcp.MethodToolsCall) {
		i.mu.Lock()
		set := i.next
		i.next = nil
		i.mu.Unlock()
		if set != nil {
			b, err := json.Marshal(r.Params)
			if err != nil {
				return nil, err
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				return nil, err
			}
			for k, v := range set {
				m[k] = v
			}
			r.Params = m
		}
	}
	return i.StreamableHTTP.SendRequest(ctx, r)
}

// retryWith makes the client's next tools/call a retry carrying state.
func (i *injector) retryWith(state string, responses map[string]any) {
	i.mu.Lock()
	i.next = map[string]any{"requestState": state, "inputResponses": responses}
	i.mu.Unlock()
}

// connectInjector opens a 2026-07-28 client that does not answer
// input_required by itself (the test drives the retries).
func connectInjector(t *testing.T, url string, opts ...transport.StreamableHTTPCOption) (*mcpClient, *injector) {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	inj := &injector{StreamableHTTP: tr}
	tp := &tap{Interface: inj}
	c := client.NewClient(httpTap{tp}, client.WithMaxInputRoundTrips(1))
	return start(t, c, tp, modern), inj
}

// ask calls a composite tool and returns the input_required result's
// requestState and the ids of its input requests.
func ask(t *testing.T, c *mcpClient, tool, args string) (string, []string) {
	t.Helper()
	before := len(c.tap.raw("tools/call"))
	_, err := c.call(t, tool, args)
	if err == nil || !strings.Contains(err.Error(), "exceeded maximum retries") {
		t.Fatalf("%s: want an input_required result (the client gives up after one round trip), got err %v", tool, err)
	}
	raws := c.tap.raw("tools/call")
	if len(raws) != before+1 {
		t.Fatalf("%s: %d results seen", tool, len(raws)-before)
	}
	var r struct {
		ResultType    string                     `json:"resultType"`
		RequestState  string                     `json:"requestState"`
		InputRequests map[string]json.RawMessage `json:"inputRequests"`
	}
	if err := json.Unmarshal(raws[len(raws)-1], &r); err != nil {
		t.Fatal(err)
	}
	if r.ResultType != "input_required" || r.RequestState == "" || len(r.InputRequests) != 1 {
		t.Fatalf("%s: not an input_required result with a requestState: %s", tool, raws[len(raws)-1])
	}
	return r.RequestState, keys(r.InputRequests)
}

func accept(step string, content map[string]any) map[string]any {
	return map[string]any{step: map[string]any{"action": "accept", "content": content}}
}

// waitingRunID finds the one waiting run of a workflow (the
// input_required result does not name its run).
func waitingRunID(t *testing.T, p *proc, bearer, workflow string) string {
	t.Helper()
	code, body := apiDo(t, p, bearer, http.MethodGet, "/api/v1/runs?status=waiting&workflow="+workflow, "")
	var l struct {
		Runs []struct {
			ID string `json:"id"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/runs: %d %s", code, body)
	}
	if len(l.Runs) != 1 {
		t.Fatalf("%d waiting runs of %s, want 1: %s", len(l.Runs), workflow, body)
	}
	return l.Runs[0].ID
}

// refusedRetry checks that c's retry of tool with requestState tok is
// refused with an error that contains want, and returns the error.
func refusedRetry(t *testing.T, c *mcpClient, inj *injector, tool, args, tok string, responses map[string]any, want string) string {
	t.Helper()
	inj.retryWith(tok, responses)
	res, err := c.call(t, tool, args)
	msg := ""
	switch {
	case err != nil:
		msg = err.Error()
	case res.IsError:
		msg = text(res)
	default:
		t.Fatalf("a retry with requestState %.40q… was accepted: %s", tok, text(res))
	}
	if !strings.Contains(msg, want) {
		t.Errorf("refusal %q does not say %q", msg, want)
	}
	return msg
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestTokens(t *testing.T) {
	p := startVMCP(t, durableConfig(t, "", map[string]string{"ask_1s.yaml": questionWorkflow("ask_1s", "1s")}))
	c, inj := connectInjector(t, p.URL)
	inv := `{"incident_id":"INC-1042"}`
	page := map[string]any{"page": false}

	refused := func(t *testing.T, tool, args, tok string, responses map[string]any, want string) {
		t.Helper()
		t.Logf("refusal: %s", refusedRetry(t, c, inj, tool, args, tok, responses, want))
	}

	t.Run("replay", func(t *testing.T) {
		tok, reqs := ask(t, c, "investigate_incident", inv)
		if !slices.Equal(reqs, []string{"confirm_page"}) {
			t.Errorf("input requests %v, want [confirm_page]", reqs)
		}
		inj.retryWith(tok, accept("confirm_page", page))
		res := c.mustCall(t, "investigate_incident", inv)
		id, _ := runMeta(res)["id"].(string)
		if ticket, _ := report(t, res)["ticket"].(string); !strings.HasPrefix(ticket, "T-") {
			t.Fatalf("first use of the token: %s", text(res))
		}
		before := completedWithTicket(t, p, id)
		refused(t, "investigate_incident", inv, tok, accept("confirm_page", map[string]any{"page": true}), "already used")
		after := apiRun(t, p, id)
		if after.Status != before.Status || after.Updated != before.Updated || len(after.History) != len(before.History) || after.kinds()["answered"] != 1 {
			t.Errorf("the replay changed the run: before %s %s [%s], after %s %s [%s]", before.Status, before.Updated, before.historyString(),
				after.Status, after.Updated, after.historyString())
		}
	})

	t.Run("concurrent_use", func(t *testing.T) {
		// The same token from 8 clients at once: exactly one answer
		// applies.
		tok, _ := ask(t, c, "investigate_incident", inv)
		id := waitingRunID(t, p, "", "investigate_incident")
		const n = 8
		type outcome struct {
			i     int
			ok    bool
			paged any
			msg   string
		}
		clients := make([]*mcpClient, n)
		injs := make([]*injector, n)
		for i := range n {
			clients[i], injs[i] = connectInjector(t, p.URL)
			injs[i].retryWith(tok, accept("confirm_page", map[string]any{"page": i%2 == 0}))
		}
		gate := make(chan struct{})
		outs := make(chan outcome, n)
		for i := range n {
			go func() {
				<-gate
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				req := mcp.CallToolRequest{}
				req.Params.Name = "investigate_incident"
				req.Params.Arguments = json.RawMessage(inv)
				res, err := clients[i].CallTool(ctx, req)
				switch {
				case err != nil:
					outs <- outcome{i: i, msg: err.Error()}
				case res.IsError:
					outs <- outcome{i: i, msg: text(res)}
				default:
					var m map[string]any
					_ = json.Unmarshal([]byte(text(res)), &m)
					outs <- outcome{i: i, ok: true, paged: m["paged"], msg: text(res)}
				}
			}()
		}
		close(gate)
		var winners []outcome
		for range n {
			o := <-outs
			if o.ok {
				winners = append(winners, o)
			} else {
				t.Logf("concurrent use %d refused: %s", o.i, o.msg)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("%d of %d concurrent uses of one token succeeded, want 1: %+v", len(winners), n, winners)
		}
		v := completedWithTicket(t, p, id)
		if k := v.kinds(); k["answered"] != 1 {
			t.Errorf("history after concurrent uses: %s", v.historyString())
		}
		if want := winners[0].i%2 == 0; winners[0].paged != want {
			t.Errorf("the run's output says paged=%v, but the answer that won said page=%v", winners[0].paged, want)
		}
	})

	t.Run("tampered_and_garbage", func(t *testing.T) {
		tok, _ := ask(t, c, "investigate_incident", inv)
		id := waitingRunID(t, p, "", "investigate_incident")
		before := apiRun(t, p, id)
		flip := []byte(tok)
		i := len(flip) / 2
		if flip[i] == 'A' {
			flip[i] = 'B'
		} else {
			flip[i] = 'A'
		}
		for _, bad := range []string{string(flip), tok[:len(tok)-4], tok + "AAAA", "v1.garbage", "garbage", strings.Repeat("x", 10000)} {
			refused(t, "investigate_incident", inv, bad, accept("confirm_page", page), "invalid requestState")
		}
		after := apiRun(t, p, id)
		if after.Status != state.StatusWaiting || len(after.History) != len(before.History) {
			t.Errorf("bad tokens changed the run: %s [%s]", after.Status, after.historyString())
		}
		// The genuine token still works.
		inj.retryWith(tok, accept("confirm_page", page))
		res := c.mustCall(t, "investigate_incident", inv)
		if got, _ := runMeta(res)["id"].(string); got != id {
			t.Errorf("the genuine token resumed run %q, want %s", got, id)
		}
		completedWithTicket(t, p, id)
	})

	t.Run("expired", func(t *testing.T) {
		tok, _ := ask(t, c, "ask_1s", `{"tag":"exp"}`)
		id := waitingRunID(t, p, "", "ask_1s")
		time.Sleep(1500 * time.Millisecond)
		refused(t, "ask_1s", `{"tag":"exp"}`, tok, accept("ask", map[string]any{"ok": true}), "expired")
		// The deadline fired meanwhile: on_cancel continue, the step
		// after ran; the late answer was not applied.
		eventually(t, 10*time.Second, "the deadline to finish run "+id, func() bool {
			return apiRun(t, p, id).Status == state.StatusCompleted
		})
		v := completedWithTicket(t, p, id)
		if k := v.kinds(); k["deadline"] != 1 || k["answered"] != 0 || v.Output["action"] != "cancel" {
			t.Errorf("run %s: output %v, history %s; want the deadline's cancel and no answer", id, v.Output, v.historyString())
		}
	})

	t.Run("another_owner", func(t *testing.T) {
		const aliceTok, bobTok = "alice-e2e-secret", "bob-e2e-secret"
		pa := startVMCP(t, durableConfig(t, "", nil)+fmt.Sprintf(
			"incoming_auth:\n  type: tokens\n  tokens:\n    - {principal: alice, sha256: %q}\n    - {principal: bob, sha256: %q}\n",
			sha256hex(aliceTok), sha256hex(bobTok)))
		bearer := func(tok string) transport.StreamableHTTPCOption {
			return transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + tok})
		}
		alice, ainj := connectInjector(t, pa.URL, bearer(aliceTok))
		bob, binj := connectInjector(t, pa.URL, bearer(bobTok))

		tok, _ := ask(t, alice, "investigate_incident", inv)
		id := waitingRunID(t, pa, aliceTok, "investigate_incident")
		before := apiRunAs(t, pa, aliceTok, id)

		// Bob replays Alice's token: refused, and nothing changes.
		t.Logf("refusal: %s", refusedRetry(t, bob, binj, "investigate_incident", inv, tok, accept("confirm_page", map[string]any{"page": true}), "another principal"))
		// Nor can Bob see, answer or cancel her run by id.
		for _, call := range []struct{ tool, args string }{
			{"vmcp_run_get", fmt.Sprintf(`{"run_id":%q}`, id)},
			{"vmcp_run_resume", fmt.Sprintf(`{"run_id":%q,"action":"accept","content":{"page":true}}`, id)},
			{"vmcp_run_cancel", fmt.Sprintf(`{"run_id":%q}`, id)},
		} {
			res, err := bob.call(t, call.tool, call.args)
			if err != nil || !res.IsError || !strings.Contains(text(res), "not found") {
				t.Errorf("bob's %s on alice's run: err %v, %v; want a not-found error", call.tool, err, res)
			}
		}
		if l := listRuns(t, bob, "", ""); len(l) != 0 {
			t.Errorf("bob lists %d runs, want none: %v", len(l), l)
		}
		for _, r := range []struct{ method, path, body string }{
			{http.MethodGet, "/api/v1/runs/" + id, ""},
			{http.MethodPost, "/api/v1/runs/" + id + "/resume", `{"action":"accept","content":{"page":true}}`},
			{http.MethodPost, "/api/v1/runs/" + id + "/cancel", ""},
		} {
			if code, body := apiDo(t, pa, bobTok, r.method, r.path, r.body); code != http.StatusNotFound {
				t.Errorf("bob: %s %s: %d %s; want 404", r.method, r.path, code, body)
			}
		}
		if code, _ := apiDo(t, pa, "", http.MethodGet, "/api/v1/runs/"+id, ""); code != http.StatusUnauthorized {
			t.Errorf("GET without a token: %d, want 401", code)
		}
		after := apiRunAs(t, pa, aliceTok, id)
		if after.Status != state.StatusWaiting || after.Updated != before.Updated || len(after.History) != len(before.History) {
			t.Errorf("bob changed alice's run: %s [%s]", after.Status, after.historyString())
		}

		// Alice's token still works, and her answer is recorded as hers.
		ainj.retryWith(tok, accept("confirm_page", page))
		res := alice.mustCall(t, "investigate_incident", inv)
		if got, _ := runMeta(res)["id"].(string); got != id {
			t.Errorf("alice's token resumed run %q, want %s", got, id)
		}
		v := apiRunAs(t, pa, aliceTok, id)
		if v.Status != state.StatusCompleted {
			t.Errorf("alice's run: %s", v.Status)
		}
		for _, h := range v.History {
			if h.Kind == "answered" && h.Who != "alice" {
				t.Errorf("the answer is recorded as %q's, want alice's", h.Who)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// 4. A deadline that passes while vmcp is down

func TestDeadlineWhileDown(t *testing.T) {
	p := startVMCP(t, durableConfig(t, "", map[string]string{"ask_2s.yaml": questionWorkflow("ask_2s", "2s")}))
	c := connect(t, p.URL, legacy, false)
	res, err := c.call(t, "ask_2s", `{"tag":"down"}`)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pausedID(res, "ask")
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := runMeta(res)["deadline"].(string)
	deadline, err := time.Parse(time.RFC3339, dl)
	if err != nil {
		t.Fatalf("paused result deadline %q: %v", dl, err)
	}
	if err := p.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkNoRace(t, p)
	checkStateFile(t, p, func(st state.Driver) {
		r, err := st.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != state.StatusWaiting || r.Pending == nil || r.Pending.Deadline.IsZero() {
			t.Fatalf("after SIGTERM run %s is %s with question %+v; want waiting with a deadline", id, r.Status, r.Pending)
		}
	})
	// The deadline is stored to the second; wait past it.
	time.Sleep(time.Until(deadline.Add(1500 * time.Millisecond)))

	p2 := restartVMCP(t, p)
	ready := time.Now()
	eventually(t, 10*time.Second, "the deadline to finish run "+id, func() bool {
		// Not just "no longer waiting": the claim makes it running first.
		return state.Finished(apiRun(t, p2, id).Status)
	})
	t.Logf("run finished %s after /readyz (deadline passed %s before the restart was ready)",
		time.Since(ready).Round(time.Millisecond), ready.Sub(deadline).Round(time.Millisecond))
	v := completedWithTicket(t, p2, id)
	if v.Output["action"] != "cancel" {
		t.Errorf("output %v: want action cancel (on_cancel: continue)", v.Output)
	}
	if s := v.Steps["after"]; s["status"] != "completed" {
		t.Errorf("the step after the question: %v", s)
	}
	found := false
	for _, h := range v.History {
		if h.Kind == "deadline" {
			found = true
			if h.Who != "vmcp" || h.Step != "ask" {
				t.Errorf("deadline event %+v", h)
			}
		}
	}
	if !found || v.kinds()["answered"] != 0 {
		t.Errorf("history %s: want a deadline event and no answer", v.historyString())
	}
}

// ---------------------------------------------------------------------------
// 5. Startup with many stored runs (a measurement, no timed assertion)

// TestDurableStartupManyRuns stores waiting runs (copies of a real
// paused investigate_incident run) directly with state.Store, then times
// `vmcp serve` from process start to /readyz, and checks that a stored
// run is listed and can be answered. It stores 10,000 runs by default;
// VMCP_E2E_STARTUP_RUNS=100000 is the full measurement (about 1 GiB of
// state file and 2-3 minutes under -race), 0 skips.
func TestDurableStartupManyRuns(t *testing.T) {
	total := 10_000
	if s := os.Getenv("VMCP_E2E_STARTUP_RUNS"); s != "" {
		if _, err := fmt.Sscan(s, &total); err != nil {
			t.Fatalf("VMCP_E2E_STARTUP_RUNS=%q: %v", s, err)
		}
	}
	if total <= 0 {
		t.Skip("VMCP_E2E_STARTUP_RUNS=0")
	}
	// One real paused run, to copy.
	start := time.Now()
	p := startVMCP(t, durableConfig(t, "", nil))
	t.Logf("start 0: vmcp serve with an empty state file: process start → /readyz %s (includes writing the config)", time.Since(start).Round(time.Millisecond))
	c := connect(t, p.URL, legacy, false)
	model := startPaused(t, c)
	if err := p.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkNoRace(t, p)

	st, err := state.Open(statePath(p), &state.Options{BatchSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	src, err := st.Get(ctx, model)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("model run: checkpoint %d bytes, definition %d bytes, params %s", len(src.Checkpoint), len(src.Definition), src.Params)

	gen := time.Now()
	const workers = 500
	ids := make(chan int)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		last  string
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ids {
				r := &state.Run{Workflow: src.Workflow, Owner: src.Owner, Definition: src.Definition,
					DefinitionName: src.DefinitionName, Params: src.Params}
				err := st.Create(ctx, r)
				if err == nil {
					cp := bytes.Replace(src.Checkpoint, []byte(model), []byte(r.ID), 1)
					q := *src.Pending
					q.Deadline = time.Now().Add(4 * time.Hour)
					_, err = st.Pause(ctx, r.ID, cp, q)
				}
				errMu.Lock()
				if err != nil && first == nil {
					first = err
				}
				last = r.ID
				errMu.Unlock()
			}
		}()
	}
	for i := range total {
		ids <- i
	}
	close(ids)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
	genTook := time.Since(gen)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(statePath(p))
	t.Logf("stored %d waiting runs in %s (%d workers, batches of up to 1000); state file %.1f MiB",
		total, genTook.Round(time.Millisecond), workers, float64(fi.Size())/(1<<20))

	// Process start → /readyz, three times (the page cache is warm after
	// the first).
	for i := range 3 {
		start := time.Now()
		p2 := restartVMCP(t, p)
		ready := time.Since(start)
		rss := ""
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p2.Pid())); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "VmRSS:") {
					rss = strings.Join(strings.Fields(line)[1:], " ")
				}
			}
		}
		t.Logf("start %d: vmcp serve with %d stored runs: process start → /readyz %s, RSS %s (race build: %v)", i+1, total+1, ready.Round(time.Millisecond), rss, raceEnabled)
		if i < 2 {
			if err := p2.stop(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			p = p2
			continue
		}
		// The stored runs are real: listed, and one is answered.
		took := time.Now()
		code, body := apiDo(t, p2, "", http.MethodGet, "/api/v1/runs?status=waiting&limit=100", "")
		var l struct {
			Runs []map[string]any `json:"runs"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &l) != nil || len(l.Runs) != 100 {
			t.Fatalf("GET /api/v1/runs?status=waiting&limit=100: %d %.300s", code, body)
		}
		t.Logf("listing 100 of %d waiting runs: %s", total+1, time.Since(took).Round(time.Microsecond))
		took = time.Now()
		code, body = apiDo(t, p2, "", http.MethodPost, "/api/v1/runs/"+last+"/resume", `{"action":"accept","content":{"page":false}}`)
		if code != http.StatusOK {
			t.Fatalf("resuming a stored run: %d %s", code, body)
		}
		t.Logf("resuming one stored run over HTTP: %s", time.Since(took).Round(time.Microsecond))
		completedWithTicket(t, p2, last)
	}
}
