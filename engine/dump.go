package engine

import (
	"fmt"
	"strings"

	"github.com/vmcp-dev/vmcp/steps"
)

// Dump renders the plan as stable text: what the compiler decided, for
// golden tests and for `vmcp graph --format text`.
func (p *Plan) Dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "workflow %s\n", p.Name)
	fmt.Fprintf(&b, "  timeout: %s  max_parallel: %d\n", durOrNone(p.Timeout), p.MaxParallel)
	fmt.Fprintf(&b, "  input: %s\n", compact(p.InputSchema))
	if p.OutputSchema != nil {
		fmt.Fprintf(&b, "  output_schema: %s\n", compact(p.OutputSchema))
	}
	fmt.Fprintf(&b, "  annotations: %s\n", annotationsText(p.Annotations))
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "  [%d] %s (%s) at %d:%d\n", s.Index, s.ID, s.Kind.Name(), s.Pos.Line, s.Pos.Col)
		switch k := s.Kind.(type) {
		case *steps.ToolCall:
			dumpCall(&b, k)
		case *steps.ForEach:
			dumpCall(&b, k.Call)
			fmt.Fprintf(&b, "      for_each as %s, max_parallel %d\n", k.As, k.MaxParallel)
		case *steps.Elicitation:
			fmt.Fprintf(&b, "      schema: %s\n", compact(k.SchemaJSON))
			fmt.Fprintf(&b, "      on_decline: %s  on_cancel: %s\n", k.OnDecline, k.OnCancel)
		}
		if len(s.Deps) > 0 {
			var ds []string
			for _, d := range s.Deps {
				how := []string{}
				if d.Explicit {
					how = append(how, "depends_on")
				}
				if d.Inferred {
					how = append(how, "ref")
				}
				ds = append(ds, fmt.Sprintf("%s (%s)", d.ID, strings.Join(how, "+")))
			}
			fmt.Fprintf(&b, "      after: %s\n", strings.Join(ds, ", "))
		}
		if s.condition != nil {
			fmt.Fprintf(&b, "      condition: %s\n", s.condition.src)
		}
		var opts []string
		if s.onError != "abort" {
			opts = append(opts, "on_error "+s.onError)
		}
		if s.hasDefault {
			opts = append(opts, "default "+shortJSON(s.defaultOutput))
		}
		if s.timeout > 0 {
			opts = append(opts, "timeout "+s.timeout.String())
		}
		if r := s.retry; r != nil {
			opts = append(opts, fmt.Sprintf("retry %d×, delay %s, backoff %g, max %s, jitter %v, on %s",
				r.maxAttempts, r.delay, r.backoff, durOrNone(r.maxDelay), r.jitter, classNames(r.on)))
		}
		if len(opts) > 0 {
			fmt.Fprintf(&b, "      %s\n", strings.Join(opts, "; "))
		}
	}
	var sinks []string
	for _, i := range p.sinks {
		sinks = append(sinks, p.Steps[i].ID)
	}
	fmt.Fprintf(&b, "  sinks: %s\n", strings.Join(sinks, ", "))
	if p.output != nil {
		b.WriteString("  output: template\n")
	}
	return b.String()
}

func dumpCall(b *strings.Builder, k *steps.ToolCall) {
	args := "{}"
	if k.Args != nil {
		if v, ok := k.Args.Static(); ok {
			args = "static " + shortJSON(v)
		} else {
			args = "templated"
		}
	}
	fmt.Fprintf(b, "      tool: %s.%s  args: %s  input schema: %v\n", k.Backend, k.Tool, args, k.Input != nil)
}

func durOrNone(d interface{ String() string }) string {
	s := d.String()
	if s == "0s" {
		return "none"
	}
	return s
}

func compact(raw []byte) string {
	if len(raw) == 0 {
		return "none"
	}
	v, err := steps.DecodeJSON(raw)
	if err != nil {
		return string(raw)
	}
	b, _ := steps.EncodeJSON(v)
	return string(b)
}

func annotationsText(a ToolAnnotations) string {
	f := func(name string, v *bool) string {
		if v == nil {
			return name + "=?"
		}
		return fmt.Sprintf("%s=%v", name, *v)
	}
	return strings.Join([]string{f("readOnly", a.ReadOnlyHint), f("destructive", a.DestructiveHint), f("idempotent", a.IdempotentHint), f("openWorld", a.OpenWorldHint)}, " ")
}

func classNames(c errClass) string {
	if c == 0 {
		return "all"
	}
	var s []string
	if c&classTransport != 0 {
		s = append(s, "transport")
	}
	if c&classTimeout != 0 {
		s = append(s, "timeout")
	}
	if c&classToolError != 0 {
		s = append(s, "tool_error")
	}
	return strings.Join(s, ",")
}
