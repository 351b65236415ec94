package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// deploys: a deployment history per service, newest first. checkout's
// v2.14.0 reached production at 09:05, seven minutes before INC-1042.
// deploy and rollback add to the history (ids after the seed's highest,
// author "vmcp").

type deployment struct {
	ID          string `json:"id"`
	Version     string `json:"version"`
	Environment string `json:"environment"`
	At          string `json:"at"`
	Author      string `json:"author"`
}

func seedDeploys() map[string][]deployment {
	d := func(id, version, env string, day, h, m int, author string) deployment {
		return deployment{ID: id, Version: version, Environment: env, At: stamp(nov(day, h, m, 0)), Author: author}
	}
	return map[string][]deployment{
		"checkout": {
			d("D-311", "v2.14.0", "production", 25, 9, 5, "lee.chen"),
			d("D-310", "v2.14.0", "staging", 24, 16, 20, "lee.chen"),
			d("D-306", "v2.13.2", "production", 21, 10, 30, "kim.park"),
			d("D-305", "v2.13.2", "staging", 20, 17, 45, "kim.park"),
			d("D-299", "v2.13.1", "production", 18, 14, 10, "ana.silva"),
			d("D-291", "v2.13.0", "production", 13, 11, 0, "kim.park"),
		},
		"search": {
			d("D-309", "v4.2.1", "production", 24, 11, 30, "priya.n"),
			d("D-308", "v4.2.1", "staging", 24, 9, 0, "priya.n"),
			d("D-297", "v4.2.0", "production", 17, 15, 20, "sam.ortiz"),
		},
		"auth": {
			d("D-307", "v1.8.3", "production", 23, 13, 40, "omar.haddad"),
			d("D-293", "v1.8.2", "production", 14, 10, 5, "omar.haddad"),
		},
	}
}

// nextDeployID follows the seed's highest id (D-311).
const nextDeployID = 312

// deployAuthor is the author of deploys made through the demo.
const deployAuthor = "vmcp"

type deployStore struct {
	mu      sync.Mutex
	clock   clock
	history map[string][]deployment // newest first
	next    int
}

func newDeploys() *backend {
	s := &deployStore{history: seedDeploys(), next: nextDeployID}
	return &backend{
		name:         "deploys",
		instructions: "Demo deployment system (vmcp). Services: auth, checkout, search. Deterministic: checkout v2.14.0 reached production at 2026-11-25T09:05:00Z.",
		tools: []*tool{
			{
				name:        "list_recent",
				description: "Recent deployments of a service, newest first.",
				input: `{
  "type": "object",
  "properties": {
    "service": {"type": "string", "description": "Service name."},
    "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5, "description": "How many deployments to return."}
  },
  "required": ["service"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "deploys": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "id": {"type": "string"},
          "version": {"type": "string"},
          "environment": {"type": "string", "enum": ["staging", "production"]},
          "at": {"type": "string", "format": "date-time"},
          "author": {"type": "string"}
        },
        "required": ["id", "version", "environment", "at", "author"]
      }
    }
  },
  "required": ["deploys"]
}`,
				annotations: readOnly("List recent deploys"),
				run:         s.listRecent,
			},
			{
				name:        "deploy",
				description: "Deploy a version of a service to an environment. Replaces what runs there.",
				input: `{
  "type": "object",
  "properties": {
    "service": {"type": "string", "description": "Service name."},
    "version": {"type": "string", "description": "Version to deploy, e.g. v2.14.1.", "pattern": "^v?[0-9]+\\.[0-9]+\\.[0-9]+$"},
    "environment": {"type": "string", "enum": ["staging", "production"], "description": "Target environment."}
  },
  "required": ["service", "version", "environment"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "id": {"type": "string"},
    "service": {"type": "string"},
    "version": {"type": "string"},
    "environment": {"type": "string", "enum": ["staging", "production"]},
    "previous_version": {"type": "string"},
    "at": {"type": "string", "format": "date-time"}
  },
  "required": ["id", "service", "version", "environment", "at"]
}`,
				annotations: writes("Deploy", true, false),
				run:         s.deploy,
			},
			{
				name:        "rollback",
				description: "Roll a service in production back to an earlier version.",
				input: `{
  "type": "object",
  "properties": {
    "service": {"type": "string", "description": "Service name."},
    "to_version": {"type": "string", "description": "A version that was deployed before, e.g. v2.13.0.", "pattern": "^v?[0-9]+\\.[0-9]+\\.[0-9]+$"}
  },
  "required": ["service", "to_version"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "id": {"type": "string"},
    "service": {"type": "string"},
    "version": {"type": "string"},
    "previous_version": {"type": "string"},
    "at": {"type": "string", "format": "date-time"}
  },
  "required": ["id", "service", "version", "at"]
}`,
				annotations: writes("Roll back", true, false),
				run:         s.rollback,
			},
		},
	}
}

// deploymentsOf returns a service's history; callers hold s.mu.
func (s *deployStore) deploymentsOf(service string) ([]deployment, error) {
	h, ok := s.history[service]
	if !ok {
		return nil, unknownService(service, slices.Collect(maps.Keys(s.history)))
	}
	return h, nil
}

// current returns the newest deployment of a service in env.
func current(h []deployment, env string) (deployment, bool) {
	for _, d := range h {
		if d.Environment == env {
			return d, true
		}
	}
	return deployment{}, false
}

// sameVersion compares versions with or without their leading "v".
func sameVersion(a, b string) bool {
	return strings.TrimPrefix(a, "v") == strings.TrimPrefix(b, "v")
}

// record adds a deployment to the front of a service's history; callers
// hold s.mu.
func (s *deployStore) record(service, version, env string) deployment {
	d := deployment{ID: fmt.Sprintf("D-%d", s.next), Version: version, Environment: env, At: s.clock.tick(), Author: deployAuthor}
	s.next++
	s.history[service] = append([]deployment{d}, s.history[service]...)
	return d
}

func (s *deployStore) listRecent(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Service string `json:"service"`
		Limit   intArg `json:"limit"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("service", in.Service)
	limit := c.between("limit", in.Limit, 1, 50, 5)
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.deploymentsOf(in.Service)
	if err != nil {
		return nil, err
	}
	return struct {
		Deploys []deployment `json:"deploys"`
	}{slices.Clone(h[:min(limit, len(h))])}, nil
}

type deployOut struct {
	ID              string `json:"id"`
	Service         string `json:"service"`
	Version         string `json:"version"`
	Environment     string `json:"environment,omitempty"`
	PreviousVersion string `json:"previous_version,omitempty"`
	At              string `json:"at"`
}

func (s *deployStore) deploy(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Service     string `json:"service"`
		Version     string `json:"version"`
		Environment string `json:"environment"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("service", in.Service)
	c.need("version", in.Version)
	c.match("version", in.Version, versionPattern, "a version such as v2.14.1")
	c.need("environment", in.Environment)
	c.oneOf("environment", in.Environment, "staging", "production")
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.deploymentsOf(in.Service)
	if err != nil {
		return nil, err
	}
	prev, _ := current(h, in.Environment)
	d := s.record(in.Service, in.Version, in.Environment)
	return deployOut{ID: d.ID, Service: in.Service, Version: d.Version, Environment: d.Environment, PreviousVersion: prev.Version, At: d.At}, nil
}

func (s *deployStore) rollback(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Service   string `json:"service"`
		ToVersion string `json:"to_version"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("service", in.Service)
	c.need("to_version", in.ToVersion)
	c.match("to_version", in.ToVersion, versionPattern, "a version such as v2.13.0")
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.deploymentsOf(in.Service)
	if err != nil {
		return nil, err
	}
	cur, ok := current(h, "production")
	if !ok {
		return nil, fmt.Errorf("%s has never been deployed to production: nothing to roll back", in.Service)
	}
	if sameVersion(cur.Version, in.ToVersion) {
		return nil, fmt.Errorf("%s already runs %s in production", in.Service, cur.Version)
	}
	var earlier []string
	target := ""
	for _, d := range h {
		if d.Environment != "production" || sameVersion(d.Version, cur.Version) || slices.Contains(earlier, d.Version) {
			continue
		}
		earlier = append(earlier, d.Version)
		if target == "" && sameVersion(d.Version, in.ToVersion) {
			target = d.Version
		}
	}
	if target == "" {
		if len(earlier) == 0 {
			return nil, fmt.Errorf("%s has no earlier production version to roll back to", in.Service)
		}
		return nil, fmt.Errorf("%s was never in production at %s; earlier production versions, newest first: %s", in.Service, in.ToVersion, strings.Join(earlier, ", "))
	}
	d := s.record(in.Service, target, "production")
	return deployOut{ID: d.ID, Service: in.Service, Version: d.Version, PreviousVersion: cur.Version, At: d.At}, nil
}
