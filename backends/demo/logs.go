package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// logs: per-service log statistics computed from a simple model, so any
// window gives consistent numbers: a steady volume of lines with a trickle
// of background errors, plus (for checkout) a burst of errors since
// INC-1042 started at 09:12. Over the last hour checkout has 412 errors in
// 5632 lines; search has 3 in 2403.

type logProfile struct {
	linesPerMin   float64 // lines per minute, errors not included
	errorsPerHour float64 // background errors
	background    string  // the background errors' message
	burst         *logBurst
}

type logBurst struct {
	since    time.Time
	perMin   float64
	messages []burstMessage
}

type burstMessage struct {
	text      string
	share     float64 // of the burst's errors
	firstSeen time.Time
}

func logProfiles() map[string]*logProfile {
	return map[string]*logProfile{
		"checkout": {
			linesPerMin: 87, errorsPerHour: 4,
			background: "connection reset by peer: inventory-cache",
			burst: &logBurst{since: nov(25, 9, 12, 0), perMin: 8.5, messages: []burstMessage{
				{"upstream timeout: payments-gateway did not answer within 3000ms", 0.70, nov(25, 9, 11, 42)},
				{"circuit breaker open: payments-gateway", 0.24, nov(25, 9, 14, 5)},
				{"card authorisation failed: context deadline exceeded", 0.06, nov(25, 9, 12, 31)},
			}},
		},
		"search": {
			linesPerMin: 40, errorsPerHour: 3,
			background: "suggest index shard 7 returned partial results",
		},
		"auth": {
			linesPerMin: 25, errorsPerHour: 6,
			background: "rate limit exceeded for client mobile-ios",
		},
	}
}

type logStore struct {
	profiles map[string]*logProfile // read-only
}

func newLogs() *backend {
	s := &logStore{profiles: logProfiles()}
	return &backend{
		name:         "logs",
		instructions: "Demo log search (vmcp). Services: auth, checkout, search. Deterministic: checkout has an error burst since 2026-11-25T09:12:00Z.",
		tools: []*tool{{
			name:        "search",
			description: "Search a service's logs over a recent window. Returns counts, a one-line summary and the most frequent errors.",
			input: `{
  "type": "object",
  "properties": {
    "service": {"type": "string", "description": "Service name."},
    "since": {"type": "string", "description": "How far back to search, as a duration: 15m, 1h, 24h.", "pattern": "^[0-9]+(ms|s|m|h)$"},
    "query": {"type": "string", "description": "Optional filter, e.g. level:error or a phrase."},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100, "description": "Maximum number of log lines scanned for top_errors."}
  },
  "required": ["service", "since"],
  "additionalProperties": false
}`,
			output: `{
  "type": "object",
  "properties": {
    "error_count": {"type": "integer", "description": "Lines at level error or above."},
    "total": {"type": "integer", "description": "Lines in the window."},
    "summary": {"type": "string"},
    "top_errors": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "message": {"type": "string"},
          "count": {"type": "integer"},
          "first_seen": {"type": "string", "format": "date-time"}
        },
        "required": ["message", "count"]
      }
    }
  },
  "required": ["error_count", "total", "summary", "top_errors"]
}`,
			annotations: readOnly("Search logs"),
			run:         s.search,
		}},
	}
}

type topError struct {
	Message   string `json:"message"`
	Count     int    `json:"count"`
	FirstSeen string `json:"first_seen,omitempty"`
}

type searchOut struct {
	ErrorCount int        `json:"error_count"`
	Total      int        `json:"total"`
	Summary    string     `json:"summary"`
	TopErrors  []topError `json:"top_errors"`
}

// maxTopErrors is how many messages top_errors lists at most.
const maxTopErrors = 5

func (s *logStore) search(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Service string `json:"service"`
		Since   string `json:"since"`
		Query   string `json:"query"`
		Limit   intArg `json:"limit"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("service", in.Service)
	c.need("since", in.Since)
	w := c.window("since", in.Since)
	limit := c.between("limit", in.Limit, 1, 1000, 100)
	if err := c.err(); err != nil {
		return nil, err
	}
	p := s.profiles[in.Service]
	if p == nil {
		return nil, unknownService(in.Service, slices.Collect(maps.Keys(s.profiles)))
	}

	// Errors per message over the window.
	start := now.Add(-w)
	var msgs []topError
	if n := int(math.Round(p.errorsPerHour * w.Hours())); n > 0 {
		// Background errors are spread evenly; the first is half a period
		// into the window.
		period := time.Duration(float64(time.Hour) / p.errorsPerHour)
		first := start.Add(period / 2).Truncate(time.Second)
		msgs = append(msgs, topError{Message: p.background, Count: n, FirstSeen: stamp(first)})
	}
	if b := p.burst; b != nil && now.After(b.since) {
		overlap := min(w, now.Sub(b.since))
		n := int(math.Round(b.perMin * overlap.Minutes()))
		shares := make([]float64, len(b.messages))
		for i, m := range b.messages {
			shares[i] = m.share
		}
		for i, k := range apportion(n, shares) {
			if k > 0 {
				m := b.messages[i]
				msgs = append(msgs, topError{Message: m.text, Count: k, FirstSeen: stamp(later(m.firstSeen, start))})
			}
		}
	}
	errorCount := 0
	for _, m := range msgs {
		errorCount += m.Count
	}
	total := int(math.Round(p.linesPerMin*w.Minutes())) + errorCount

	// A phrase narrows the errors to the matching messages; a level filter
	// ("level:error") keeps them all, as they all are errors.
	q := strings.TrimSpace(in.Query)
	phrase := q != "" && !strings.HasPrefix(q, "level:")
	if phrase {
		var keep []topError
		for _, m := range msgs {
			if strings.Contains(strings.ToLower(m.Message), strings.ToLower(q)) {
				keep = append(keep, m)
			}
		}
		msgs = keep
		errorCount = 0
		for _, m := range msgs {
			errorCount += m.Count
		}
	}

	// top_errors counts what a scan of at most limit error lines finds.
	scanned := min(limit, errorCount)
	if scanned < errorCount {
		weights := make([]float64, len(msgs))
		for i, m := range msgs {
			weights[i] = float64(m.Count)
		}
		for i, k := range apportion(scanned, weights) {
			msgs[i].Count = k
		}
	}
	top := []topError{}
	for _, m := range msgs {
		if m.Count > 0 {
			top = append(top, m)
		}
	}
	sort.SliceStable(top, func(i, j int) bool {
		if top[i].Count != top[j].Count {
			return top[i].Count > top[j].Count
		}
		return top[i].Message < top[j].Message
	})
	if len(top) > maxTopErrors {
		top = top[:maxTopErrors]
	}
	return searchOut{
		ErrorCount: errorCount,
		Total:      total,
		Summary:    logSummary(in.Since, q, phrase, errorCount, total, scanned, top),
		TopErrors:  top,
	}, nil
}

// logSummary is the one-line summary of a search.
func logSummary(since, query string, phrase bool, errors, total, scanned int, top []topError) string {
	what := "errors"
	if phrase {
		what = fmt.Sprintf("errors matching %q", query)
	}
	if errors == 0 {
		return fmt.Sprintf("No %s in %d lines over the last %s.", what, total, since)
	}
	s := fmt.Sprintf("%d %s in %d lines over the last %s (%.1f%%)", errors, what, total, since, 100*float64(errors)/float64(total))
	if len(top) == 0 || scanned == 0 {
		return s + "."
	}
	share := float64(top[0].Count) / float64(scanned)
	if share < 0.5 || top[0].Count < 5 {
		return s + "; no single error stands out."
	}
	s += fmt.Sprintf(", mostly %q (%.0f%% of %d scanned)", top[0].Message, 100*share, scanned)
	if top[0].FirstSeen != "" {
		s += ", first seen " + top[0].FirstSeen
	}
	return s + "."
}

// apportion splits n into integer parts proportional to weights (largest
// remainder; ties go to the earlier weight), so the parts sum to n.
func apportion(n int, weights []float64) []int {
	out := make([]int, len(weights))
	var sum float64
	for _, w := range weights {
		sum += w
	}
	if n <= 0 || sum <= 0 {
		return out
	}
	type rem struct {
		i int
		r float64
	}
	rems := make([]rem, len(weights))
	given := 0
	for i, w := range weights {
		exact := float64(n) * w / sum
		out[i] = int(math.Floor(exact))
		given += out[i]
		rems[i] = rem{i, exact - float64(out[i])}
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; given < n; k++ {
		out[rems[k%len(rems)].i]++
		given++
	}
	return out
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// unknownService is the tool error for a service the demo does not know.
func unknownService(name string, known []string) error {
	return fmt.Errorf("unknown service %q; known services: %s", name, knownList(known))
}
