package dsl_test

import (
	"fmt"
	"os"

	"github.com/vmcp-dev/vmcp/dsl"
)

// A workflow with two mistakes: every problem is reported, each at its
// position, as file:line:col: message.
func ExampleLoadWorkflow() {
	src := `name: triage
steps:
  - id: fetch
    tool: pagerduty.get_incident
    timeout: 10 minutes
  - id: notify
    tool: chat.post
    depnds_on: [fetch]
`
	wf, ds := dsl.LoadWorkflow("triage.yaml", []byte(src))
	for _, d := range ds {
		fmt.Println(d)
	}
	// The workflow is still decoded, with positions.
	fmt.Println(len(wf.Steps), "steps; the second at", wf.Src.NodePos(wf.Steps[1].Node))
	// Output:
	// triage.yaml:5:14: "timeout" of step "fetch": "10 minutes" is not a duration (use e.g. 30s, 5m, 1h30m)
	// triage.yaml:8:5: unknown key "depnds_on" in step "notify"; did you mean "depends_on"?
	// 2 steps; the second at triage.yaml:6:5
}

// Render prints each diagnostic with its source line and a caret, the way
// `vmcp validate` does.
func ExampleDiagnostics_Render() {
	src := `name: triage
steps:
  - id: ask
    type: elicitation
    message: Page the on-call?
    schema: {type: object, properties: {page: {type: boolean}}}
    on_decline: skip
`
	_, ds := dsl.LoadWorkflow("triage.yaml", []byte(src))
	ds.Render(os.Stdout)
	// Output:
	// triage.yaml:7:17: "on_decline" of step "ask" must be one of abort, continue, skip_remaining, got "skip"; did you mean "skip_remaining"?
	//         on_decline: skip
	//                     ^
}

// A config names its backends and workflow files; ${VAR} expands from the
// environment, and references to backends are checked.
func ExampleLoadConfig() {
	src := `backends:
  - name: pagerduty
    url: https://pd.example/mcp
    headers: {Authorization: "Bearer ${PD_TOKEN}"}
  - name: logs
    builtin: logs
aggregation:
  priority_order: [pagerduty, log]
`
	env := func(name string) (string, bool) { return "", false }
	cfg, ds := dsl.LoadConfig("vmcp.yaml", []byte(src), env)
	for _, d := range ds {
		fmt.Println(d)
	}
	fmt.Println("listen:", cfg.Listen.Value)
	// Output:
	// vmcp.yaml:4:38: environment variable PD_TOKEN is not set (in backends[0].headers.Authorization)
	// vmcp.yaml:8:31: unknown backend "log" in aggregation.priority_order; did you mean "logs"?
	// listen: 127.0.0.1:4483
}
