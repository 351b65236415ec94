package dsl

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// diagStrings renders diagnostics as "file:line:col: message".
func diagStrings(ds Diagnostics) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

func newTestLoader(t testing.TB) *Loader {
	t.Helper()
	l, err := NewLoader()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLoadWorkflowGoodFiles(t *testing.T) {
	l := newTestLoader(t)
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			wf, ds := l.LoadWorkflowFile(f)
			if len(ds) > 0 {
				t.Fatalf("unexpected diagnostics:\n%v", ds)
			}
			if wf == nil || wf.Src == nil || wf.Node == nil || len(wf.Steps) == 0 {
				t.Fatalf("incomplete workflow: %+v", wf)
			}
			for _, st := range wf.Steps {
				if st.Node == nil || !st.ID.Set || st.ID.Node == nil {
					t.Errorf("step without node or id: %+v", st)
				}
			}
		})
	}
}

// TestLoadWorkflowDecode checks the typed AST of the SPEC example,
// positions included.
func TestLoadWorkflowDecode(t *testing.T) {
	wf, ds := LoadWorkflowFile("testdata/investigate_incident.yaml")
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	if got, want := wf.Pos().String(), "testdata/investigate_incident.yaml:2:1"; got != want {
		t.Errorf("workflow pos = %s, want %s", got, want)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	check("name", wf.Name.Value, "investigate_incident")
	check("timeout", wf.Timeout.Value, 10*time.Minute)
	check("max_parallel", wf.MaxParallel.Value, 8)
	check("steps", len(wf.Steps), 7)

	logs := wf.Steps[1]
	check("logs kind", logs.Kind(), StepTool)
	check("retry attempts", logs.Retry.MaxAttempts.Value, 3)
	check("retry delay", logs.Retry.Delay.Value, 500*time.Millisecond)
	check("retry backoff", logs.Retry.Backoff.Value, 2.0)
	check("retry jitter", logs.Retry.Jitter.Value, true)
	check("retry max_delay", logs.Retry.MaxDelay.Value, 5*time.Second)
	check("retry node line", logs.Retry.Node.Line, 22)
	check("logs timeout", logs.Timeout.Value, 20*time.Second)
	check("step pos", wf.Src.NodePos(logs.Node).String(), "testdata/investigate_incident.yaml:16:5")

	metrics := wf.Steps[2]
	check("on_error", metrics.OnError.Action.Value, ActionContinue)
	check("on_error set", metrics.OnError.Action.Set, true)
	check("default_output set", metrics.DefaultOutput.IsSet(), true)

	ask := wf.Steps[3]
	check("ask kind", ask.Kind(), StepElicitation)
	check("on_decline", ask.OnDecline.Action.Value, ActionSkipRemaining)
	check("on_cancel", ask.OnCancel.Action.Value, ActionAbort)
	check("condition col", wf.Src.NodePos(ask.Condition.Node).String(), "testdata/investigate_incident.yaml:31:16")
	check("ask timeout", ask.Timeout.Value, 4*time.Hour)

	notify := wf.Steps[5]
	check("for_each", notify.ForEach.Value, "{{ steps.incident.output.teams }}")
	check("as", notify.As.Value, "team")
	check("step max_parallel", notify.MaxParallel.Value, 4)

	report := wf.Steps[6]
	check("depends_on", len(report.DependsOn), 1)
	check("depends_on[0]", report.DependsOn[0].Value, "notify")
	check("unset retry", report.Retry == nil, true)
	check("unset on_error", report.OnError.Action.Set, false)

	in, err := wf.InputSchema()
	if err != nil {
		t.Fatal(err)
	}
	check("input schema required", in["required"], []any{"incident_id"})
}

func TestLoadWorkflowToolHiveForms(t *testing.T) {
	wf, ds := LoadWorkflowFile("testdata/toolhive_deploy_and_notify.yaml")
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	if got := wf.Steps[0].OnError; got.Action.Value != ActionAbort || got.Node == nil {
		t.Errorf("on_error object form: %+v", got)
	}
	if got := wf.Steps[1].OnDecline.Action.Value; got != ActionSkipRemaining {
		t.Errorf("on_decline object form: %q", got)
	}
	in, err := wf.InputSchema()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "object", "properties": map[string]any{"pr_number": map[string]any{"type": "integer"}}}
	if diff := cmp.Diff(want, in); diff != "" {
		t.Errorf("input schema of the flat parameters form (-want +got):\n%s", diff)
	}
}

func TestDecodeForms(t *testing.T) {
	src := `name: forms
steps:
  - id: a
    tool: x.y
    on_error: {action: retry, retry_count: 3, retry_delay: 5s}
    for_each: "{{ [1, 2] }}"
    max_parallel: 2.0
    retry: {backoff: 3}
  - id: b
    type: elicitation
    message: ok?
    schema: {type: object, properties: {}}
    on_cancel: {action: continue}
anchored: &x 1
`
	// anchored: is an unknown key; decoding still works.
	wf, ds := LoadWorkflow("f.yaml", []byte(src))
	if got := diagStrings(ds); len(got) != 1 || !strings.Contains(got[0], `unknown key "anchored"`) {
		t.Fatalf("diagnostics: %q", got)
	}
	a, b := wf.Steps[0], wf.Steps[1]
	if a.OnError.Action.Value != ActionRetry || a.OnError.RetryCount.Value != 3 || a.OnError.RetryDelay.Value != 5*time.Second {
		t.Errorf("on_error: %+v", a.OnError)
	}
	if !a.MaxParallel.Set || a.MaxParallel.Value != 2 {
		t.Errorf("max_parallel 2.0: %+v", a.MaxParallel)
	}
	if a.Retry.Backoff.Value != 3 {
		t.Errorf("integer backoff: %+v", a.Retry.Backoff)
	}
	if b.OnCancel.Action.Value != ActionContinue || b.OnCancel.Node == nil || b.OnCancel.Action.Node.Line != 13 {
		t.Errorf("on_cancel: %+v", b.OnCancel)
	}
}

// TestLoadWorkflowErrors covers each class of bad input with the exact
// diagnostics.
func TestLoadWorkflowErrors(t *testing.T) {
	l := newTestLoader(t)
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "empty file",
			src:  "",
			want: []string{`w.yaml: the file is empty; a workflow file is a YAML mapping (name: …, steps: …)`},
		},
		{
			name: "only comments",
			src:  "# nothing here\n",
			want: []string{`w.yaml: the file has no workflow in it (only comments); a workflow file is a YAML mapping (name: …, steps: …)`},
		},
		{
			name: "explicit null document",
			src:  "---\n~\n",
			want: []string{`w.yaml:2:1: the file has no content; a workflow file is a YAML mapping`},
		},
		{
			name: "syntax error",
			src:  "name: x\nsteps:\n  - id: a\n    tool: [b\n",
			want: []string{`w.yaml:4:11: YAML syntax error: did not find expected ',' or ']' (the [ … ] list that starts here is not closed, or lacks a comma)`},
		},
		{
			name: "bad indentation in a list",
			src:  "name: x\nsteps:\n  - id: a\n   tool: b\n",
			want: []string{`w.yaml:3:3: YAML syntax error: did not find expected '-' indicator (in the block that starts here: check the indentation of the lines below)`},
		},
		{
			name: "bad indentation in a mapping",
			src:  "name: x\n  steps: 1\n",
			want: []string{`w.yaml:2:3: YAML syntax error: mapping values are not allowed in this context (check this line's indentation, or quote a value that contains ': ')`},
		},
		{
			name: "syntax error on the first line",
			src:  "name: x: y\n",
			want: []string{`w.yaml:1:1: YAML syntax error: mapping values are not allowed in this context (check this line's indentation, or quote a value that contains ': ')`},
		},
		{
			name: "invalid UTF-8",
			src:  "name: x\nsteps: \xff\n",
			want: []string{`w.yaml:2:8: YAML syntax error: invalid leading UTF-8 octet`},
		},
		{
			name: "unknown anchor",
			src:  "name: x\nsteps: *nope\n",
			want: []string{`w.yaml:2:8: YAML syntax error: unknown anchor 'nope' referenced`},
		},
		{
			name: "old Mac line endings",
			src:  "name: x\rsteps: {}\r",
			want: []string{`w.yaml:2:8: "steps" must be a list, got a mapping`},
		},
		{
			name: "two documents",
			src:  "name: x\nsteps: [{id: a, tool: b}]\n---\nname: y\n",
			want: []string{`w.yaml:3:1: a workflow file holds one YAML document; remove this second one (or the "---" separator)`},
		},
		{
			name: "an empty second document is fine",
			src:  "name: x\nsteps: [{id: a, tool: b}]\n---\n",
			want: nil,
		},
		{
			name: "root is a list",
			src:  "- name: x\n",
			want: []string{`w.yaml:1:1: a workflow file must be a YAML mapping (key: value), not a list`},
		},
		{
			name: "root is a string",
			src:  "hello\n",
			want: []string{`w.yaml:1:1: a workflow file must be a YAML mapping (key: value), not the string "hello"`},
		},
		{
			name: "duplicate keys",
			src:  "name: x\nsteps:\n  - id: a\n    tool: b\n    tool: c\nname: y\n",
			want: []string{
				`w.yaml:5:5: duplicate key "tool" (first defined at line 4)`,
				`w.yaml:6:1: duplicate key "name" (first defined at line 1)`,
			},
		},
		{
			name: "missing required at the root",
			src:  "description: nothing else\n",
			want: []string{
				`w.yaml:1:1: workflow: missing required key "name"`,
				`w.yaml:1:1: workflow: missing required key "steps"`,
			},
		},
		{
			name: "unknown keys with suggestions",
			src: `name: x
stpes: []
steps:
  - id: fetch
    tool: a.b
    depnds_on: [x]
    retry: {max_atempts: 3}
    on_error: {action: retry, retry_cout: 2}
annotations: {readOnlyHnt: true, zzz: 1}
`,
			want: []string{
				`w.yaml:2:1: unknown key "stpes" in workflow; did you mean "steps"?`,
				`w.yaml:6:5: unknown key "depnds_on" in step "fetch"; did you mean "depends_on"?`,
				`w.yaml:7:13: unknown key "max_atempts" in "retry" of step "fetch"; did you mean "max_attempts"?`,
				`w.yaml:8:31: unknown key "retry_cout" in "on_error" of step "fetch"; did you mean "retry_count"?`,
				`w.yaml:9:15: unknown key "readOnlyHnt" in "annotations"; did you mean "readOnlyHint"?`,
				`w.yaml:9:34: unknown key "zzz" in "annotations" (allowed: title, readOnlyHint, destructiveHint, idempotentHint, openWorldHint)`,
			},
		},
		{
			name: "step kinds",
			src: `name: x
steps:
  - id: t
    message: hi
    on_decline: abort
  - id: e
    type: elicitation
    tool: a.b
    arguments: {}
    retry: {}
  - id: f
    tool: a.b
    as: thing
    max_parallel: 2
`,
			want: []string{
				`w.yaml:3:5: step "t": missing required key "tool"`,
				`w.yaml:4:5: "message" of step "t" is only allowed in elicitation steps (type: elicitation)`,
				`w.yaml:5:5: "on_decline" of step "t" is only allowed in elicitation steps (type: elicitation)`,
				`w.yaml:6:5: step "e": missing required key "message"`,
				`w.yaml:6:5: step "e": missing required key "schema"`,
				`w.yaml:8:5: "tool" of step "e" is not allowed in an elicitation step`,
				`w.yaml:9:5: "arguments" of step "e" is not allowed in an elicitation step`,
				`w.yaml:10:5: "retry" of step "e" is not allowed in an elicitation step`,
				`w.yaml:13:5: step "f": "as" can only be used together with "for_each"`,
				`w.yaml:14:5: step "f": "max_parallel" can only be used together with "for_each"`,
			},
		},
		{
			name: "scalar values",
			src: `name: Bad Name
timeout: 10 minutes
max_parallel: four
steps:
  - id: fetch-logs
    type: tol
    tool: a.b
    timeout: 30
    max_parallel: 0
    condition: ""
    depends_on: fetch
  - id: b
    tool: a.b
    timeout: 9999999999999h
    retry: {max_attempts: 101, delay: 1 second, backoff: 0.5, jitter: yes please, on: [transport, transport, nope]}
    arguments: [1, 2]
`,
			want: []string{
				`w.yaml:1:7: "name": "Bad Name" is not a valid tool name: use lowercase letters, digits, _ and - (at most 64 characters, starting with a letter or digit)`,
				`w.yaml:2:10: "timeout": "10 minutes" is not a duration (use e.g. 30s, 5m, 1h30m)`,
				`w.yaml:3:15: "max_parallel" must be an integer ≥ 1, got "four"`,
				`w.yaml:5:9: "id" of step #1: "fetch-logs" is not a valid step id: use letters, digits and _ (at most 64 characters, not starting with a digit) so that it can be written as steps.<id> in expressions`,
				`w.yaml:6:11: "type" of step "fetch-logs" must be one of tool, elicitation, got "tol"; did you mean "tool"?`,
				`w.yaml:8:14: "timeout" of step "fetch-logs": 30 is not a duration (use e.g. 30s, 5m, 1h30m)`,
				`w.yaml:9:5: step "fetch-logs": "max_parallel" can only be used together with "for_each"`,
				`w.yaml:9:19: "max_parallel" of step "fetch-logs" must be an integer ≥ 1, got 0`,
				`w.yaml:10:16: "condition" of step "fetch-logs" must not be empty`,
				`w.yaml:11:17: "depends_on" of step "fetch-logs" must be a list of step ids, e.g. [fetch], got "fetch"`,
				`w.yaml:14:14: "timeout" of step "b": "9999999999999h" is not a duration (use e.g. 30s, 5m, 1h30m)`,
				`w.yaml:15:27: "retry.max_attempts" of step "b" must be an integer from 1 to 100, got 101`,
				`w.yaml:15:39: "retry.delay" of step "b": "1 second" is not a duration (use e.g. 30s, 5m, 1h30m)`,
				`w.yaml:15:58: "retry.backoff" of step "b" must be a number ≥ 1, got 0.5`,
				`w.yaml:15:71: "retry.jitter" of step "b" must be true or false, got "yes please"`,
				`w.yaml:15:99: "retry.on" of step "b" lists "transport" twice`,
				`w.yaml:15:110: "retry.on[2]" of step "b" must be one of transport, timeout, tool_error, got "nope"`,
				`w.yaml:16:16: "arguments" of step "b" must be a mapping, got a list`,
			},
		},
		{
			name: "alternatives",
			src: `name: x
steps:
  - id: a
    tool: a.b
    on_error: abrot
  - id: b
    tool: a.b
    on_error: {action: retri, retry_count: -1}
  - id: c
    tool: a.b
    on_error: 5
  - id: d
    type: elicitation
    message: m
    schema: {type: object, properties: {}}
    on_decline: {action: skip}
    on_cancel: [abort]
  - id: e
    tool: a.b
    on_error: {}
`,
			want: []string{
				`w.yaml:5:15: "on_error" of step "a" must be one of abort, continue, got "abrot"; did you mean "abort"?`,
				`w.yaml:8:24: "on_error.action" of step "b" must be one of abort, continue, retry, got "retri"; did you mean "retry"?`,
				`w.yaml:8:44: "on_error.retry_count" of step "b" must be an integer from 0 to 100, got -1`,
				`w.yaml:11:15: "on_error" of step "c" must be one of abort, continue or a mapping, got 5`,
				`w.yaml:16:26: "on_decline.action" of step "d" must be one of abort, continue, skip_remaining, got "skip"; did you mean "skip_remaining"?`,
				`w.yaml:17:16: "on_cancel" of step "d" must be one of abort, continue, skip_remaining or a mapping, got a list`,
				`w.yaml:20:15: "on_error" of step "e": missing required key "action"`,
			},
		},
		{
			name: "schemas",
			src: `name: x
parameters: {type: array}
output_schema: {properties: {}}
steps:
  - id: a
    type: elicitation
    message: m
    schema:
      type: object
      properties:
        nested: {type: object}
        fine: {type: string}
`,
			want: []string{
				`w.yaml:2:20: "parameters.type" must be object, got "array"`,
				`w.yaml:3:16: "output_schema": missing required key "type"`,
				// A nested object in an elicitation schema is the compiler's
				// to report (it says why: the form must be flat).
			},
		},
		{
			name: "flat parameters form",
			src: `name: x
parameters:
  id: {type: string}
  count: 5
steps: [{id: a, tool: b}]
`,
			want: []string{
				`w.yaml:4:10: "parameters.count" must be a mapping (the JSON Schema of one parameter), got 5`,
			},
		},
		{
			name: "steps are not a list",
			src:  "name: x\nsteps: {id: a}\n",
			want: []string{`w.yaml:2:8: "steps" must be a list, got a mapping`},
		},
		{
			name: "empty steps",
			src:  "name: x\nsteps: []\n",
			want: []string{`w.yaml:2:8: "steps" must not be empty`},
		},
		{
			name: "steps that are not mappings",
			src:  "name: x\nsteps:\n  - just text\n  -\n  - [a]\n",
			want: []string{
				`w.yaml:3:5: step #1 must be a mapping, got "just text"`,
				`w.yaml:4:4: step #2 must be a mapping, got an empty value`,
				`w.yaml:5:5: step #3 must be a mapping, got a list`,
			},
		},
		{
			name: "too many steps",
			src: func() string {
				var b strings.Builder
				b.WriteString("name: x\nsteps:\n")
				for i := range 201 {
					b.WriteString("  - {id: s" + strconv.Itoa(i) + ", tool: a.b}\n")
				}
				return b.String()
			}(),
			want: []string{`w.yaml:3:3: too many steps: 201; a workflow may have at most 200 steps (a vmcp limit: split it into several workflows)`},
		},
		{
			name: "duplicate step ids and reserved item names",
			src: `name: x
steps:
  - {id: a, tool: t.t}
  - {id: b, tool: t.t, for_each: "{{ [1] }}", as: steps}
  - {id: a, tool: t.t}
`,
			want: []string{
				`w.yaml:4:51: "as": "steps" would hide the built-in variable steps; choose another name`,
				`w.yaml:5:10: duplicate step id "a" (first defined at line 3)`,
			},
		},
		{
			name: "values JSON cannot hold",
			src: `name: x
steps:
  - id: a
    tool: t.t
    arguments: {big: .inf, ok: 1, bin: !!binary aGVsbG8=}
    retry: {backoff: .nan}
`,
			want: []string{
				`w.yaml:5:22: ".inf" is not a number JSON can hold`,
				`w.yaml:5:40: binary values are not supported`,
				`w.yaml:6:22: ".nan" is not a number JSON can hold`,
			},
		},
		{
			name: "keys JSON cannot hold",
			src: `name: x
? [a, b]
: 1
steps:
  - <<: {id: a}
    tool: t.t
`,
			want: []string{
				`w.yaml:2:3: mapping keys must be strings, not a list`,
				`w.yaml:5:5: merge keys (<<) are not supported; write the keys out`,
				`w.yaml:5:5: step #1: missing required key "id"`,
			},
		},
		{
			name: "alias cycle",
			src:  "name: x\nsteps: [{id: a, tool: t.t, arguments: &args {self: *args}}]\n",
			want: []string{`w.yaml:2:52: alias *args refers to a value that contains it`},
		},
		{
			name: "tab in the indentation",
			src:  "name: x\nsteps:\n  - id: a\n  \ttool: b\n",
			want: []string{`w.yaml:4:3: YAML syntax error: found a tab character that violates indentation (indent with spaces, not tabs)`},
		},
		{
			name: "tab at the start of a line",
			src:  "name: x\nsteps:\n\t- id: a\n",
			want: []string{`w.yaml:3:1: YAML syntax error: found character that cannot start any token (a tab: indent with spaces, not tabs)`},
		},
		{
			name: "reserved character",
			src:  "name: x\nsteps:\n  - {id: a, tool: @b}\n",
			want: []string{"w.yaml:3:19: YAML syntax error: found character that cannot start any token (@ cannot start a plain value: quote it)"},
		},
		{
			name: "unclosed flow mapping",
			src:  "name: x\nsteps:\n  - id: a\n    arguments: {note: \"a {b\", c: [1, 2], d: 1\n  - id: b\n",
			want: []string{`w.yaml:4:16: YAML syntax error: did not find expected ',' or '}' (the { … } mapping that starts here is not closed, or lacks a comma)`},
		},
		{
			name: "unknown step type is reported alone",
			src:  "name: x\nsteps:\n  - id: a\n    type: question\n    message: hi\n    schema: {type: object, properties: {}}\n",
			want: []string{`w.yaml:4:11: "type" of step "a" must be one of tool, elicitation, got "question"`},
		},
		{
			name: "elicitation schema of the wrong type needs no properties",
			src:  "name: x\nsteps:\n  - id: a\n    type: elicitation\n    message: hi\n    schema: {type: string}\n  - id: b\n    type: elicitation\n    message: hi\n    schema: {type: object}\n",
			want: []string{
				`w.yaml:6:20: "schema.type" of step "a" must be object, got "string"`,
				`w.yaml:10:13: "schema" of step "b": missing required key "properties"`,
			},
		},
		{
			name: "for_each given a list",
			src:  "name: x\nsteps:\n  - id: a\n    tool: t\n    for_each: [a, 2, true]\n  - id: b\n    tool: t\n    for_each: [{x: 1}]\n",
			want: []string{
				`w.yaml:5:15: "for_each" of step "a" must be a {{ }} expression that gives a list, e.g. "{{ ['a', 2, true] }}"`,
				`w.yaml:8:15: "for_each" of step "b" must be a {{ }} expression that gives a list, e.g. "{{ steps.fetch.output.items }}"`,
			},
		},
		{
			name: "unknown keys list the keys that step kind allows",
			src:  "name: x\nsteps:\n  - id: a\n    tool: t\n    cache: true\n  - id: b\n    type: elicitation\n    message: hi\n    schema: {type: object, properties: {}}\n    cache: true\n  - id: c\n    tool: t\n    retries: 3\n",
			want: []string{
				`w.yaml:5:5: unknown key "cache" in step "a" (allowed: id, type, depends_on, condition, timeout, on_error, default_output, tool, arguments, retry, for_each, as, max_parallel)`,
				`w.yaml:10:5: unknown key "cache" in step "b" (allowed: id, type, depends_on, condition, timeout, on_error, default_output, message, schema, on_decline, on_cancel)`,
				`w.yaml:13:5: unknown key "retries" in step "c"; did you mean "retry"?`,
			},
		},
		{
			name: "aliases are fine",
			src:  "name: x\nsteps:\n  - &s {id: a, tool: t.t, timeout: &d 5s}\n  - {id: b, tool: t.t, timeout: *d}\n",
			want: nil,
		},
		{
			name: "alias bomb",
			src: `a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
`,
			want: []string{`w.yaml:1:1: the document is too large once aliases are expanded (more than 262144 values)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wf, ds := l.LoadWorkflow("w.yaml", []byte(tt.src))
			if diff := cmp.Diff(tt.want, diagStrings(ds)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
			for _, d := range ds {
				if d.Pos.Line > 0 && d.Text == "" && strings.TrimSpace(tt.src) != "" {
					t.Errorf("diagnostic without source text: %v", d)
				}
			}
			_ = wf
		})
	}
}

func TestLoadWorkflowFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	_, ds := LoadWorkflowFile(missing)
	want := []string{missing + ": cannot read file: no such file or directory"}
	if diff := cmp.Diff(want, diagStrings(ds)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	dir := t.TempDir()
	_, ds = LoadWorkflowFile(dir)
	if len(ds) != 1 || ds[0].Pos.File != dir || !strings.Contains(ds[0].Msg, "cannot read file") {
		t.Errorf("directory: %v", ds)
	}
}

func TestRender(t *testing.T) {
	// Columns count characters: the caret lines up after "é".
	_, ds := LoadWorkflow("w.yaml", []byte("name: x\nsteps:\n  - {id: a, tool: é.t, timeout: soon}\n"))
	var b strings.Builder
	ds.Render(&b)
	want := `w.yaml:3:33: "timeout" of step "a": "soon" is not a duration (use e.g. 30s, 5m, 1h30m)
      - {id: a, tool: é.t, timeout: soon}
                                    ^
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestDiagnosticSpans: a diagnostic about a value spans it (End), one
// about a key that should not be there spans the key and its value, and
// one about a missing key has no end.
func TestDiagnosticSpans(t *testing.T) {
	src := `name: x
steps:
  - id: a
    tool: t
    timeout: soon
    cache:
      size: 10
  - id: b
    type: elicitation
    message: "m"
`
	_, ds := newTestLoader(t).LoadWorkflow("w.yaml", []byte(src))
	type span struct{ From, To string }
	got := map[string]span{}
	for _, d := range ds {
		end := ""
		if d.End.IsValid() {
			end = d.End.String()
		}
		got[d.Msg[:strings.IndexAny(d.Msg, ":;(")]] = span{d.Pos.String(), end}
	}
	want := map[string]span{
		`"timeout" of step "a"`:            {"w.yaml:5:14", "w.yaml:5:18"},
		`unknown key "cache" in step "a" `: {"w.yaml:6:5", "w.yaml:7:15"},
		`step "b"`:                         {"w.yaml:8:5", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans (-want +got):\n%s\n%v", diff, ds)
	}
}
