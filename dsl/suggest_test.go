package dsl

import "testing"

func TestDidYouMean(t *testing.T) {
	stepKeys := []string{"id", "type", "depends_on", "condition", "timeout", "on_error", "default_output",
		"tool", "arguments", "retry", "for_each", "as", "max_parallel", "message", "schema", "on_decline", "on_cancel"}
	retryKeys := []string{"max_attempts", "delay", "backoff", "max_delay", "jitter", "on"}
	for _, tt := range []struct {
		s          string
		candidates []string
		want       string
	}{
		// Typos: within max(1, len/3) edits.
		{"argumnets", stepKeys, "arguments"},
		{"depnds_on", stepKeys, "depends_on"},
		{"tol", stepKeys, "tool"},
		{"timout", stepKeys, "timeout"},
		{"stpes", []string{"name", "steps"}, "steps"},
		{"readonlyHint", []string{"readOnlyHint", "title"}, "readOnlyHint"},
		{"max_atempts", retryKeys, "max_attempts"},
		// Shortened and extended forms of one candidate.
		{"retries", stepKeys, "retry"},
		{"depends", stepKeys, "depends_on"},
		{"args", stepKeys, "arguments"},
		{"desc", []string{"name", "description"}, "description"},
		{"params", []string{"name", "parameters", "steps"}, "parameters"},
		{"steps", []string{"step"}, "step"},
		// Nothing plausible.
		{"zzz", stepKeys, ""},
		{"retry_count", []string{"max_attempts", "delay"}, ""},
		{"x", stepKeys, ""},
		{"environment", []string{"service", "version"}, ""},
		{"prod", []string{"staging", "production"}, "production"},
		{"extra", []string{"prefix", "priority", "tools", "conflict_resolution"}, ""},
		// Ambiguous stems: no guess.
		{"max", retryKeys, ""},
		{"on_", stepKeys, ""},
		// Two letters in common are not a stem.
		{"ar", stepKeys, "as"},
		{"ti", []string{"title", "timeout"}, ""},
		// Exact matches are not suggestions.
		{"tool", []string{"tool"}, ""},
	} {
		if got := DidYouMean(tt.s, tt.candidates); got != tt.want {
			t.Errorf("DidYouMean(%q) = %q, want %q", tt.s, got, tt.want)
		}
	}
}
