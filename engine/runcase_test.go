package engine

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/steps"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestRunCases runs each testdata/run/*.txtar: a workflow, scripted backend
// replies (and optionally a catalogue, arguments and answers), and compares
// the event trace in virtual time with the golden `trace` section.
//
// Sections: workflow.yaml; catalog.json; args.json; replies.json
// ({"backend.tool": [{"delay": "10ms", "structured": {…}, "text": "…",
// "isError": true, "transport": "…"}]}); answers.json ([{action, content}],
// one per pause, in order); trace (golden).
func TestRunCases(t *testing.T) {
	files, _ := filepath.Glob("testdata/run/*.txtar")
	if len(files) == 0 {
		t.Fatal("no run cases")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sec := map[string][]byte{}
			for _, f := range ar.Files {
				sec[f.Name] = f.Data
			}
			got := runCase(t, file, sec)
			if *update {
				var files []txtar.File
				for _, f := range ar.Files {
					if f.Name != "trace" {
						files = append(files, f)
					}
				}
				ar.Files = append(files, txtar.File{Name: "trace", Data: []byte(got)})
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := string(sec["trace"]); got != want {
				t.Errorf("trace mismatch (run with -update to accept)\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

type scriptedReply struct {
	Delay      string `json:"delay"`
	Structured any    `json:"structured"`
	Text       string `json:"text"`
	IsError    bool   `json:"isError"`
	Transport  string `json:"transport"`
	When       string `json:"when"`
}

func runCase(t *testing.T, file string, sec map[string][]byte) string {
	wf, ds := dsl.LoadWorkflow("workflow.yaml", sec["workflow.yaml"])
	if len(ds) > 0 {
		t.Fatalf("%s: load: %v", file, ds)
	}
	var cat Catalog
	if b, ok := sec["catalog.json"]; ok {
		var doc struct {
			Tools []*Tool `json:"tools"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("catalog: %v", err)
		}
		cat = NewStaticCatalog(doc.Tools)
	}
	p, ds := Compile(wf, &CompileOptions{Catalog: cat})
	if len(ds) > 0 {
		t.Fatalf("%s: compile: %v", file, ds)
	}
	var script map[string][]scriptedReply
	if b, ok := sec["replies.json"]; ok {
		if err := json.Unmarshal(b, &script); err != nil {
			t.Fatalf("replies: %v", err)
		}
	}
	var answers []Answer
	if b, ok := sec["answers.json"]; ok {
		if err := json.Unmarshal(b, &answers); err != nil {
			t.Fatalf("answers: %v", err)
		}
	}
	args := json.RawMessage(strings.TrimSpace(string(sec["args.json"])))

	var lines []traceLine
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCaller()
		start := time.Now()
		f.start, f.now = start, time.Now
		f.defaultDelay = time.Millisecond
		for tool, rs := range script {
			for _, r := range rs {
				// Unscripted delays are 1ms, so a step's start and finish
				// never share an instant.
				d := time.Millisecond
				if r.Delay != "" {
					var err error
					if d, err = time.ParseDuration(r.Delay); err != nil {
						t.Fatalf("delay: %v", err)
					}
				}
				f.on(tool, reply{Delay: d, Structured: r.Structured, Text: r.Text, IsError: r.IsError, Transport: r.Transport, When: r.When})
			}
		}
		var mu sync.Mutex
		seg := 0 // bumped by each question and answer: activity after an answer sorts after it
		add := func(at time.Duration, phase int, step, text string) {
			mu.Lock()
			lines = append(lines, traceLine{at: at, seg: seg, phase: phase, step: step, text: text})
			if phase == 4 {
				seg++
			}
			mu.Unlock()
		}
		f.onCall = func(tool, args string) { add(time.Since(start), 2, tool, fmt.Sprintf("call %s %s", tool, args)) }
		ro := &RunOptions{RunID: "run-1", Observer: func(ev Event) {
			at := time.Since(start)
			switch ev.Type {
			case EventStarted:
				add(at, 1, ev.Step, "started "+ev.Step)
			case EventSkipped:
				add(at, 1, ev.Step, "skipped "+ev.Step+suffix(ev.Err))
			case EventFinished:
				action := ""
				if ev.Action != "" {
					action = " (" + ev.Action + ")"
				}
				add(at, 0, ev.Step, fmt.Sprintf("finished %s %s%s%s", ev.Step, ev.Status, action, suffix(ev.Err)))
			case EventRetried:
				add(at, 0, ev.Step, fmt.Sprintf("retry %s attempt %d after: %s", ev.Step, ev.Attempt, ev.Err))
			case EventPaused:
				add(at, 3, ev.Step, "paused "+ev.Step)
			}
		}}
		e := New(f, nil)
		out, err := e.Run(t.Context(), p, args, ro)
		for err == nil && out.Status == StatusWaiting {
			q := out.Question
			add(time.Since(start), 4, q.Step, fmt.Sprintf("question %s: %q schema=%s deadline=%v", q.Step, q.Message, q.Schema, !q.Deadline.IsZero()))
			if len(answers) == 0 {
				break
			}
			a := answers[0]
			answers = answers[1:]
			// A round trip through JSON, as the store would do.
			b, _ := json.Marshal(out.Checkpoint)
			var cp Checkpoint
			if err := json.Unmarshal(b, &cp); err != nil {
				t.Fatal(err)
			}
			cp.Params = mustDecodeMap(t, out.Checkpoint.Params)
			for id, s := range cp.Steps {
				s.Output = redecode(t, s.Output)
				s.Content = redecode(t, s.Content)
				cp.Steps[id] = s
			}
			add(time.Since(start), 4, q.Step, fmt.Sprintf("answer %s %s %s", q.Step, a.Action, mustJSON(a.Content)))
			out, err = e.Resume(t.Context(), p, &cp, a, ro)
			if err != nil {
				add(time.Since(start), 4, q.Step, "rejected: "+err.Error())
				if IsInvalidAnswer(err) {
					err = nil
					out = &Outcome{Status: StatusWaiting, Question: q, Checkpoint: &cp}
				}
			}
		}
		end := time.Since(start)
		switch {
		case err != nil:
			add(end, 9, "", "error "+err.Error())
		case out.Status == StatusCompleted:
			partial := ""
			if out.Partial {
				partial = " (partial)"
			}
			add(end, 9, "", fmt.Sprintf("outcome completed%s %s", partial, mustJSON(out.Output)))
		case out.Status == StatusWaiting:
			add(end, 9, "", "outcome waiting on "+out.Question.Step)
		default:
			add(end, 9, "", fmt.Sprintf("outcome %s: %s", out.Status, out.Err))
		}
	})
	sort.SliceStable(lines, func(i, j int) bool {
		a, b := lines[i], lines[j]
		if a.at != b.at {
			return a.at < b.at
		}
		if a.seg != b.seg {
			return a.seg < b.seg
		}
		if a.phase != b.phase {
			return a.phase < b.phase
		}
		if a.phase >= 4 {
			return false // keep the order questions and answers happened in
		}
		return a.text < b.text
	})
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%6s %s\n", l.at.Round(time.Millisecond), l.text)
	}
	return b.String()
}

type traceLine struct {
	at    time.Duration
	seg   int
	phase int
	step  string
	text  string
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func mustJSON(v any) string {
	b, err := steps.EncodeJSON(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func redecode(t *testing.T, v any) any {
	if v == nil {
		return nil
	}
	b, err := steps.EncodeJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := steps.DecodeJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustDecodeMap(t *testing.T, v map[string]any) map[string]any {
	m, _ := redecode(t, v).(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return m
}
