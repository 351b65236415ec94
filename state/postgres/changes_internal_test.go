package postgres

import (
	"fmt"
	"slices"
	"testing"
)

// Packed hints fit PostgreSQL's payload limit and unpack to the same
// hints in order; a malformed line is skipped.
func TestPackHints(t *testing.T) {
	var hints []string
	for i := range 700 {
		hints = append(hints, fmt.Sprintf("waiting run-%026d", i))
	}
	payloads := packHints(hints)
	if len(payloads) < 2 {
		t.Fatalf("%d hints of %d bytes in %d payload(s)", len(hints), len(hints[0]), len(payloads))
	}
	var got []string
	for _, p := range payloads {
		if len(p) > notifyPayload {
			t.Errorf("payload of %d bytes (limit %d)", len(p), notifyPayload)
		}
		unpackHints(p, func(status, id string) { got = append(got, status+" "+id) })
	}
	if !slices.Equal(got, hints) {
		t.Errorf("unpacked %d hints, want %d in order", len(got), len(hints))
	}
	got = nil
	unpackHints("waiting a\nbogus\n\ncompleted b\nfailed ", func(status, id string) { got = append(got, status+" "+id) })
	if !slices.Equal(got, []string{"waiting a", "completed b"}) {
		t.Errorf("unpacked %q", got)
	}
	if packHints(nil) != nil {
		t.Error("no hints, yet a payload")
	}
}
