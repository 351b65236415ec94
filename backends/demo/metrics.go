package demo

import (
	"context"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"time"
)

// metrics: per-service error rate, latency and traffic. Each service has a
// baseline; checkout also has an incident level since 09:12, and a window's
// numbers are the time-weighted mix of the two. Over the last hour checkout
// has an error rate of 0.0668 and a p99 of 1902 ms; over 15m, 0.083.

type sample struct {
	errorRate, p50, p99, rpm float64
}

type metricsProfile struct {
	base     sample
	incident *sample
	since    time.Time // start of the incident level
}

func metricsProfiles() map[string]*metricsProfile {
	return map[string]*metricsProfile{
		"checkout": {
			base:     sample{errorRate: 0.002, p50: 85, p99: 310, rpm: 1450},
			incident: &sample{errorRate: 0.083, p50: 340, p99: 2300, rpm: 1380},
			since:    nov(25, 9, 12, 0),
		},
		"search": {base: sample{errorRate: 0.0012, p50: 45, p99: 180, rpm: 3200}},
		"auth":   {base: sample{errorRate: 0.0004, p50: 12, p99: 40, rpm: 900}},
	}
}

type metricsStore struct {
	profiles map[string]*metricsProfile // read-only
}

func newMetrics() *backend {
	s := &metricsStore{profiles: metricsProfiles()}
	return &backend{
		name:         "metrics",
		instructions: "Demo metrics (vmcp). Services: auth, checkout, search. Deterministic: checkout's error rate is 0.083 since 2026-11-25T09:12:00Z.",
		tools: []*tool{{
			name:        "query",
			description: "Error rate, latency and traffic of a service over a recent window.",
			input: `{
  "type": "object",
  "properties": {
    "service": {"type": "string", "description": "Service name."},
    "metric": {"type": "string", "enum": ["all", "error_rate", "latency", "traffic"], "default": "all", "description": "Which group of metrics to return."},
    "since": {"type": "string", "description": "Window as a duration: 15m, 1h, 24h.", "pattern": "^[0-9]+(ms|s|m|h)$", "default": "1h"}
  },
  "required": ["service"],
  "additionalProperties": false
}`,
			output: `{
  "type": "object",
  "properties": {
    "service": {"type": "string"},
    "window": {"type": "string"},
    "error_rate": {"type": "number", "minimum": 0, "maximum": 1, "description": "Failed requests / all requests."},
    "latency_p50_ms": {"type": "number"},
    "latency_p99_ms": {"type": "number"},
    "requests_per_min": {"type": "number"}
  },
  "required": ["service", "window", "error_rate"]
}`,
			annotations: readOnly("Query metrics"),
			run:         s.query,
		}},
	}
}

type queryOut struct {
	Service        string   `json:"service"`
	Window         string   `json:"window"`
	ErrorRate      float64  `json:"error_rate"`
	LatencyP50Ms   *float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99Ms   *float64 `json:"latency_p99_ms,omitempty"`
	RequestsPerMin *float64 `json:"requests_per_min,omitempty"`
}

func (s *metricsStore) query(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Service string `json:"service"`
		Metric  string `json:"metric"`
		Since   string `json:"since"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	if in.Metric == "" {
		in.Metric = "all"
	}
	if in.Since == "" {
		in.Since = "1h"
	}
	var c checker
	c.need("service", in.Service)
	c.oneOf("metric", in.Metric, "all", "error_rate", "latency", "traffic")
	w := c.window("since", in.Since)
	if err := c.err(); err != nil {
		return nil, err
	}
	p := s.profiles[in.Service]
	if p == nil {
		return nil, unknownService(in.Service, slices.Collect(maps.Keys(s.profiles)))
	}
	m := p.base
	if p.incident != nil && now.After(p.since) {
		f := min(w, now.Sub(p.since)).Seconds() / w.Seconds() // share of the window in the incident
		mix := func(a, b float64) float64 { return a*(1-f) + b*f }
		m = sample{
			errorRate: mix(p.base.errorRate, p.incident.errorRate),
			p50:       mix(p.base.p50, p.incident.p50),
			p99:       mix(p.base.p99, p.incident.p99),
			rpm:       mix(p.base.rpm, p.incident.rpm),
		}
	}
	out := queryOut{Service: in.Service, Window: in.Since, ErrorRate: round(m.errorRate, 4)}
	if in.Metric == "all" || in.Metric == "latency" {
		p50, p99 := round(m.p50, 0), round(m.p99, 0)
		out.LatencyP50Ms, out.LatencyP99Ms = &p50, &p99
	}
	if in.Metric == "all" || in.Metric == "traffic" {
		rpm := round(m.rpm, 0)
		out.RequestsPerMin = &rpm
	}
	return out, nil
}

// round rounds x to n decimals.
func round(x float64, n int) float64 {
	p := math.Pow(10, float64(n))
	return math.Round(x*p) / p
}
