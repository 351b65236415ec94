package dsl

// Shape checks on a decoded workflow that JSON Schema cannot express. The
// graph (unknown depends_on targets, cycles, steps.<id> references) is the
// compiler's job.

// checkWorkflow reports duplicate step ids and `as` names that would hide a
// built-in variable.
func checkWorkflow(wf *Workflow, ds *Diagnostics) {
	if wf == nil {
		return
	}
	src := wf.Src
	seen := map[string]*Step{}
	for _, st := range wf.Steps {
		if st == nil || !st.ID.Set || st.ID.Value == "" {
			continue
		}
		if first, dup := seen[st.ID.Value]; dup {
			ds.Add(src, src.NodePos(st.ID.Node), "duplicate step id %q (first defined at line %d)", st.ID.Value, first.ID.Node.Line)
			continue
		}
		seen[st.ID.Value] = st
	}
	for _, st := range wf.Steps {
		if st == nil || !st.As.Set {
			continue
		}
		// The expression variables an item variable must not hide.
		switch r := st.As.Value; r {
		case "params", "steps", "workflow", "index":
			ds.Add(src, src.NodePos(st.As.Node), "\"as\": %q would hide the built-in variable %s; choose another name", r, r)
		}
	}
}
