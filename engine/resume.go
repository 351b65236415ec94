package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/vmcp-dev/vmcp/steps"
)

// DecodeCheckpoint reads a checkpoint written as JSON, restoring the data
// model (int64 integers, float64 otherwise) that expressions compare.
func DecodeCheckpoint(b []byte) (*Checkpoint, error) {
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if cp.Version > CheckpointVersion {
		return nil, fmt.Errorf("checkpoint format %d is newer than this vmcp understands (%d)", cp.Version, CheckpointVersion)
	}
	var raw struct {
		Params map[string]json.RawMessage `json:"params"`
		Steps  map[string]struct {
			Output  json.RawMessage `json:"output"`
			Content json.RawMessage `json:"content"`
			Items   []struct {
				Output json.RawMessage `json:"output"`
			} `json:"items"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	dec := func(r json.RawMessage) (any, error) {
		if len(r) == 0 {
			return nil, nil
		}
		return steps.DecodeJSON(r)
	}
	cp.Params = map[string]any{}
	for k, v := range raw.Params {
		x, err := dec(v)
		if err != nil {
			return nil, fmt.Errorf("checkpoint params.%s: %w", k, err)
		}
		cp.Params[k] = x
	}
	if cp.Steps == nil {
		cp.Steps = map[string]*StepState{}
	}
	for id, s := range raw.Steps {
		st := cp.Steps[id]
		if st == nil {
			continue
		}
		var err error
		if st.Output, err = dec(s.Output); err != nil {
			return nil, fmt.Errorf("checkpoint steps.%s.output: %w", id, err)
		}
		if st.Content, err = dec(s.Content); err != nil {
			return nil, fmt.Errorf("checkpoint steps.%s.content: %w", id, err)
		}
		for i := range st.Items {
			if i < len(s.Items) {
				if st.Items[i].Output, err = dec(s.Items[i].Output); err != nil {
					return nil, fmt.Errorf("checkpoint steps.%s.items[%d]: %w", id, i, err)
				}
			}
		}
	}
	return &cp, nil
}

// ValidateAnswer checks an answer against the pending question without
// resuming, so a caller can refuse a bad answer before claiming the run.
func ValidateAnswer(p *Plan, cp *Checkpoint, ans Answer) error {
	if cp == nil || cp.Pending == nil {
		return ErrNotWaiting
	}
	st := p.Step(cp.Pending.Step)
	if st == nil {
		return fmt.Errorf("checkpoint waits on step %q, which workflow %q does not have", cp.Pending.Step, p.Name)
	}
	el, ok := st.Kind.(*steps.Elicitation)
	if !ok {
		return fmt.Errorf("step %q is not an elicitation", st.ID)
	}
	_, err := applyAnswer(el, ans)
	return err
}

// Unsafe returns the steps that were in flight when the checkpoint was
// taken and whose tools are neither read-only nor idempotent: re-running
// them after a crash may repeat an effect, so it needs a decision.
func Unsafe(p *Plan, cp *Checkpoint) []string {
	var out []string
	for _, id := range cp.InFlight {
		st := p.Step(id)
		if st == nil {
			continue
		}
		var call *steps.ToolCall
		switch k := st.Kind.(type) {
		case *steps.ToolCall:
			call = k
		case *steps.ForEach:
			call = k.Call
		}
		if call != nil && !call.ReadOnly && !call.Idempotent {
			out = append(out, id)
		}
	}
	return out
}

// Continue resumes an interrupted run (one that was executing when vmcp
// stopped). Steps that were in flight run again if their tools are
// read-only or idempotent; the others run again only when rerun is true,
// and otherwise fail with "interrupted" (their on_error applies).
func (e *Engine) Continue(ctx context.Context, p *Plan, cp *Checkpoint, rerun bool, ro *RunOptions) (*Outcome, error) {
	if ro == nil {
		ro = &RunOptions{}
	}
	if ro.RunID == "" {
		ro.RunID = cp.RunID
	}
	next := cloneCheckpoint(cp)
	if !rerun {
		now := e.clock.Now()
		for _, id := range Unsafe(p, cp) {
			st := p.Step(id)
			msg := "interrupted while running when vmcp stopped; not re-executed (its tool is neither read-only nor idempotent)"
			if st.onError == "continue" && st.hasDefault {
				next.Steps[id] = &StepState{Status: StepFailed, Error: msg, Output: st.defaultOutput, Finished: now}
				continue
			}
			if st.onError == "continue" {
				next.Steps[id] = &StepState{Status: StepFailed, Error: msg, Finished: now}
				continue
			}
			return &Outcome{RunID: ro.RunID, Status: StatusFailed, Err: &RunError{Workflow: p.Name, Step: id, Pos: st.Pos, Cause: msg}}, nil
		}
	}
	next.InFlight = nil
	next.Pending = nil
	return e.execute(ctx, p, next, ro)
}
