package postgres

import (
	"encoding/json"
	"strings"
	"testing"
)

// A checkpoint as encoding/json writes it (the engine's) is split into a
// skeleton and one state per step, and joins back to the same bytes;
// anything that would not is kept whole.
func TestSplitCheckpoint(t *testing.T) {
	big := strings.Repeat("x", 3000)
	split := []string{
		`{"version":1,"run_id":"r_1","workflow":"w","params":{},"steps":{},"elapsed":0}`,
		`{"version":1,"steps":{"a":{"status":"completed","output":1.0},"b":{"status":"completed","output":{"z":1e2,"a":"\u00e9\u2028<&>"}}},"elapsed":5}`,
		`{"steps":{"a\u003cb":{"output":"` + big + `"},"é":{"output":[1,2.50,-0.0]}}}`,
		`{ "version" : 1 , "steps":{"a":{}} , "x": [ 1 ] }`, // whitespace outside the steps object is kept
		`{"steps":{"a":{"output":null}},"in_flight":["b"],"trace_parent":"00-ab"}`,
		`{"x":"\"steps\":{}","steps":{"a":{"output":"q\"u}o\\"},"b\"c":{"o":["]",{"k":"{"}]}},"y":{"steps":1}}`, // quotes, escapes, brackets in strings
	}
	for _, cp := range split {
		sp := splitCheckpoint([]byte(cp), -1)
		if sp.at == nil {
			t.Errorf("not split: %s", cp)
			continue
		}
		if strings.Contains(string(sp.stored), `"output"`) {
			t.Errorf("skeleton still holds step states: %s", sp.stored)
		}
		got, err := joinCheckpoint(sp.stored, sp.at, sp.ids, sp.vals)
		if err != nil || string(got) != cp {
			t.Errorf("join of %s:\n got %s, %v", cp, got, err)
		}
		// The rows come back in any order: the join sorts them.
		n := len(sp.ids)
		rid, rval := make([]string, n), make([][]byte, n)
		for i := range n {
			rid[n-1-i], rval[n-1-i] = sp.ids[i], sp.vals[i]
		}
		if got, err := joinCheckpoint(sp.stored, sp.at, rid, rval); err != nil || string(got) != cp {
			t.Errorf("join of reversed rows of %s:\n got %s, %v", cp, got, err)
		}
	}
	whole := []string{
		``,
		`null`,
		`[1,2]`,
		`"steps"`,
		`{"version":1}`,
		`{"steps":null}`,
		`{"steps":[{"a":1}]}`,
		`{"steps":{"b":{},"a":{}}}`,            // unsorted
		`{"steps":{"a":{}, "b":{}}}`,           // whitespace inside
		`{"steps":{"a":{},"a":{"x":1}}}`,       // duplicate step
		`{"steps":{"a":{}},"steps":{"b":{}}}`,  // duplicate member
		`{"steps":{"a\u0000":{}}}`,             // NUL: not text
		`{"steps":{"\ud800":{}}}`,              // lone surrogate
		`{"steps":{"<":{}}}`,                   // encoding/json would write \u003c
		`{"steps":{"a":{"output":1}}} {"x":1}`, // trailing data
		`{"steps":{"a":{"output":1}}`,          // truncated
	}
	for _, cp := range whole {
		sp := splitCheckpoint([]byte(cp), -1)
		if sp.at != nil || string(sp.stored) != cp || len(sp.ids) != 0 {
			t.Errorf("%s: split (%v, %q), want it whole", cp, sp.at, sp.ids)
		}
	}
}

// The engine writes checkpoints with encoding/json: maps sorted, compact.
func TestSplitEncodingJSONOutput(t *testing.T) {
	type step struct {
		Status string          `json:"status"`
		Output json.RawMessage `json:"output,omitempty"`
	}
	cp := struct {
		Version int              `json:"version"`
		Steps   map[string]*step `json:"steps"`
		Pending any              `json:"pending,omitempty"`
	}{1, map[string]*step{
		"z":          {Status: "completed", Output: json.RawMessage(`{"b":1.0,"a":1e2}`)},
		"a-b_c":      {Status: "failed"},
		"<html>&":    {Status: "completed", Output: json.RawMessage(`"\u00e9"`)},
		"日本":         {Status: "completed", Output: json.RawMessage(`[1,2,3]`)},
		"line\u2028": {Status: "skipped"},
	}, map[string]any{"step": "ask"}}
	b, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	sp := splitCheckpoint(b, -1)
	if sp.at == nil || len(sp.ids) != 5 {
		t.Fatalf("not split: %s", b)
	}
	if got, err := joinCheckpoint(sp.stored, sp.at, sp.ids, sp.vals); err != nil || string(got) != string(b) {
		t.Fatalf("join:\n got %s, %v\nwant %s", got, err, b)
	}
}

func TestJoinRefusesACorruptSkeleton(t *testing.T) {
	at := int32(3)
	if _, err := joinCheckpoint([]byte(`{"steps":{}}`), &at, nil, nil); err == nil {
		t.Fatal("steps_at not on {}: no error")
	}
	at = 100
	if _, err := joinCheckpoint([]byte(`{}`), &at, nil, nil); err == nil {
		t.Fatal("steps_at past the end: no error")
	}
	at = 9
	if _, err := joinCheckpoint([]byte(`{"steps":{}}`), &at, []string{"a"}, nil); err == nil {
		t.Fatal("ids without states: no error")
	}
}

// BenchmarkSplitCheckpoint: the driver's own work to split a checkpoint
// of ten 3 KiB steps and one of 200 B, and hash its steps.
func BenchmarkSplitCheckpoint(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"version":1,"steps":{`)
	for i := range 11 {
		if i > 0 {
			sb.WriteByte(',')
		}
		n := 3 << 10
		if i == 10 {
			n = 200
		}
		sb.WriteString(`"step_` + string(rune('a'+i)) + `":{"status":"completed","output":"` + strings.Repeat("x", n) + `"}`)
	}
	sb.WriteString(`},"elapsed":1}`)
	cp := []byte(sb.String())
	b.SetBytes(int64(len(cp)))
	for b.Loop() {
		sp := splitCheckpoint(cp, -1)
		if sp.at == nil {
			b.Fatal("not split")
		}
		_ = sums(sp.ids, sp.vals)
	}
}

// Whatever bytes it is given, a split joins back to them: every
// truncation and many single-byte changes of a checkpoint.
func TestSplitJoinsBackWhateverTheInput(t *testing.T) {
	base := `{"version":1,"steps":{"a":{"output":"q\"u}o\\"},"b\"c":{"o":["]",{"k":"{"}],"n":1.0}},"z":{"steps":{}}}`
	check := func(cp string) {
		sp := splitCheckpoint([]byte(cp), -1)
		if sp.at == nil {
			return
		}
		got, err := joinCheckpoint(sp.stored, sp.at, sp.ids, sp.vals)
		if err != nil || string(got) != cp {
			t.Fatalf("split of %q joins to %q, %v", cp, got, err)
		}
	}
	for i := range len(base) + 1 {
		check(base[:i])
		for _, c := range []byte(` "\{}[],:x0`) {
			b := []byte(base)
			if i < len(b) {
				b[i] = c
				check(string(b))
			}
		}
	}
}
