package engine_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
	"github.com/vmcp-dev/vmcp/steps"
)

// echoCaller stands in for the backends: every tool returns its arguments
// as structured content.
type echoCaller struct{}

func (echoCaller) CallTool(_ context.Context, c *steps.Call) (*steps.Result, error) {
	return &steps.Result{StructuredContent: c.Arguments, Content: json.RawMessage(`[]`)}, nil
}

// Compile a workflow once, then run it: steps.<id> references make the
// edges, templates keep types, and `output` shapes the result.
func Example() {
	src := `
name: greet
parameters:
  type: object
  properties:
    who: {type: string, default: world}
steps:
  - id: hello
    tool: echo.say
    arguments: {text: "hello {{ params.who }}", n: 2}
  - id: twice
    tool: echo.say
    arguments: {n: "{{ steps.hello.output.n * 2 }}"}
output:
  greeting: "{{ steps.hello.output.text }}"
  n: "{{ steps.twice.output.n }}"
`
	wf, diags := dsl.LoadWorkflow("greet.yaml", []byte(src))
	if diags != nil {
		fmt.Println(diags)
		return
	}
	plan, diags := engine.Compile(wf, nil)
	if diags != nil {
		fmt.Println(diags)
		return
	}
	e := engine.New(echoCaller{}, nil)
	out, err := e.Run(context.Background(), plan, json.RawMessage(`{}`), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := json.Marshal(out.Output)
	fmt.Println(out.Status, string(b))
	// Output: completed {"greeting":"hello world","n":4}
}

// A run that reaches an elicitation step pauses: the engine returns the
// question and a checkpoint (which a store would persist). Later, perhaps
// in another process, the run resumes from the checkpoint with the answer.
func Example_pauseAndResume() {
	src := `
name: confirm_restart
steps:
  - id: ask
    type: elicitation
    message: Restart the api service?
    schema:
      type: object
      properties:
        reason: {type: string}
      required: [reason]
    on_decline: skip_remaining
  - id: restart
    tool: svc.restart
    arguments: {reason: "{{ steps.ask.content.reason }}"}
`
	wf, _ := dsl.LoadWorkflow("confirm.yaml", []byte(src))
	plan, _ := engine.Compile(wf, nil)
	e := engine.New(echoCaller{}, nil)
	ctx := context.Background()

	out, _ := e.Run(ctx, plan, nil, &engine.RunOptions{RunID: "r1"})
	fmt.Println(out.Status, "-", out.Question.Message)

	// A bad answer is refused and the run keeps waiting.
	_, err := e.Resume(ctx, plan, out.Checkpoint, engine.Answer{Action: "accept", Content: map[string]any{}}, nil)
	fmt.Println(engine.IsInvalidAnswer(err), err)

	done, _ := e.Resume(ctx, plan, out.Checkpoint, engine.Answer{Action: "accept", Content: map[string]any{"reason": "memory leak"}}, nil)
	b, _ := json.Marshal(done.Output)
	fmt.Println(done.Status, string(b))
	// Output:
	// waiting - Restart the api service?
	// true invalid answer: missing property "reason"
	// completed {"reason":"memory leak"}
}
