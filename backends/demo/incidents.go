package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// incidents: an incident tracker with four incidents and per-service
// on-call engineers. Paging and notes are kept in memory.

type team struct {
	Name    string `json:"name"`
	Channel string `json:"channel"`
}

type incident struct {
	id, title, service, severity, status string
	startedAt                            time.Time
	teams                                []team
	notes                                []note
}

type note struct {
	id, text, at string
}

// seedIncidents is the demo's incident list. INC-1042 is the noisy one the
// flagship workflow investigates; INC-1043 is quiet.
func seedIncidents() []*incident {
	return []*incident{
		{
			id: "INC-1042", title: "Checkout payments timing out", service: "checkout",
			severity: "high", status: "triggered", startedAt: nov(25, 9, 12, 0),
			teams: []team{{"payments", "#payments-oncall"}, {"sre", "#sre"}},
		},
		{
			id: "INC-1043", title: "Search suggestions missing for some queries", service: "search",
			severity: "low", status: "acknowledged", startedAt: nov(25, 8, 40, 0),
			teams: []team{{"search", "#search-team"}},
		},
		{
			id: "INC-1041", title: "Login rate limit rejecting mobile clients", service: "auth",
			severity: "medium", status: "acknowledged", startedAt: nov(24, 16, 5, 0),
			teams: []team{{"identity", "#identity"}, {"mobile", "#mobile-dev"}},
		},
		{
			id: "INC-1039", title: "Checkout 502s during deploy", service: "checkout",
			severity: "medium", status: "resolved", startedAt: nov(20, 15, 34, 0),
			teams: []team{{"payments", "#payments-oncall"}},
		},
	}
}

// onCall is who gets paged, per service.
func onCall() map[string]string {
	return map[string]string{
		"checkout": "Dana Whitfield (payments on-call)",
		"search":   "Sam Ortiz (search on-call)",
		"auth":     "Priya Natarajan (identity on-call)",
	}
}

type incidentStore struct {
	mu        sync.Mutex
	clock     clock
	incidents []*incident
	onCall    map[string]string
	pages     int
	notes     int
}

func (s *incidentStore) find(id string) (*incident, error) {
	for _, in := range s.incidents {
		if in.id == id {
			return in, nil
		}
	}
	ids := make([]string, len(s.incidents))
	for i, in := range s.incidents {
		ids[i] = in.id
	}
	return nil, fmt.Errorf("incident %q not found; known incidents: %s", id, knownList(ids))
}

type incidentOut struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	Service   string `json:"service"`
	Severity  string `json:"severity"`
	Status    string `json:"status"`
	StartedAt string `json:"started_at"`
	Teams     []team `json:"teams,omitempty"`
}

func (in *incident) out(withTeams bool) incidentOut {
	o := incidentOut{ID: in.id, Title: in.title, Service: in.service, Severity: in.severity, Status: in.status, StartedAt: stamp(in.startedAt)}
	if withTeams {
		o.Teams = slices.Clone(in.teams)
		if o.Teams == nil {
			o.Teams = []team{}
		}
	}
	return o
}

func newIncidents() *backend {
	s := &incidentStore{incidents: seedIncidents(), onCall: onCall()}
	return &backend{
		name:         "incidents",
		instructions: "Demo incident tracker (vmcp). Deterministic data: INC-1042 (checkout, noisy), INC-1043 (search, quiet), INC-1041 (auth), INC-1039 (resolved).",
		tools: []*tool{
			{
				name:        "get_incident",
				description: "Get one incident by id: its title, affected service, severity, status, start time and the teams involved with their chat channels.",
				input: `{
  "type": "object",
  "properties": {
    "id": {"type": "string", "description": "Incident id, e.g. INC-1042.", "pattern": "^INC-[0-9]+$"}
  },
  "required": ["id"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "id": {"type": "string"},
    "title": {"type": "string"},
    "service": {"type": "string", "description": "The affected service, as known to logs, metrics and deploys."},
    "severity": {"type": "string", "enum": ["critical", "high", "medium", "low"]},
    "status": {"type": "string", "enum": ["triggered", "acknowledged", "resolved"]},
    "started_at": {"type": "string", "format": "date-time"},
    "teams": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "name": {"type": "string"},
          "channel": {"type": "string", "description": "Chat channel, e.g. #payments-oncall."}
        },
        "required": ["name", "channel"]
      }
    }
  },
  "required": ["id", "title", "service", "severity", "status", "started_at", "teams"]
}`,
				annotations: readOnly("Get incident"),
				run:         s.get,
			},
			{
				name:        "list_open",
				description: "List incidents that are not resolved, newest first, optionally for one service.",
				input: `{
  "type": "object",
  "properties": {
    "service": {"type": "string", "description": "Only incidents of this service."},
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20, "description": "Maximum number of incidents returned."}
  },
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "incidents": {
      "type": "array",
      "items": {
        "type": "object",
        "properties": {
          "id": {"type": "string"},
          "title": {"type": "string"},
          "service": {"type": "string"},
          "severity": {"type": "string", "enum": ["critical", "high", "medium", "low"]},
          "status": {"type": "string", "enum": ["triggered", "acknowledged"]},
          "started_at": {"type": "string", "format": "date-time"}
        },
        "required": ["id", "title", "service", "severity", "status", "started_at"]
      }
    }
  },
  "required": ["incidents"]
}`,
				annotations: readOnly("List open incidents"),
				run:         s.listOpen,
			},
			{
				name:        "page_oncall",
				description: "Page the on-call engineer of the incident's service. Every call sends a new page to a person.",
				input: `{
  "type": "object",
  "properties": {
    "id": {"type": "string", "description": "Incident id.", "pattern": "^INC-[0-9]+$"},
    "note": {"type": "string", "description": "Short note shown in the page.", "maxLength": 500}
  },
  "required": ["id"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "page_id": {"type": "string"},
    "paged": {"type": "string", "description": "Who was paged."},
    "at": {"type": "string", "format": "date-time"}
  },
  "required": ["page_id", "paged", "at"]
}`,
				annotations: writes("Page on-call", false, true),
				run:         s.page,
			},
			{
				name:        "add_note",
				description: "Append a note to an incident's timeline.",
				input: `{
  "type": "object",
  "properties": {
    "id": {"type": "string", "description": "Incident id.", "pattern": "^INC-[0-9]+$"},
    "text": {"type": "string", "description": "The note (Markdown).", "minLength": 1}
  },
  "required": ["id", "text"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "note_id": {"type": "string"},
    "at": {"type": "string", "format": "date-time"}
  },
  "required": ["note_id", "at"]
}`,
				annotations: writes("Add incident note", false, false),
				run:         s.addNote,
			},
		},
	}
}

func (s *incidentStore) get(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		ID string `json:"id"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("id", in.ID)
	c.match("id", in.ID, incidentIDPattern, "an incident id such as INC-1042")
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inc, err := s.find(in.ID)
	if err != nil {
		return nil, err
	}
	return inc.out(true), nil
}

func (s *incidentStore) listOpen(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Service string `json:"service"`
		Limit   intArg `json:"limit"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	limit := c.between("limit", in.Limit, 1, 100, 20)
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	open := []incidentOut{}
	for _, inc := range s.incidents {
		if inc.status != "resolved" && (in.Service == "" || inc.service == in.Service) {
			open = append(open, inc.out(false))
		}
	}
	// RFC 3339 UTC stamps sort as text; ties (none in the seed) by id.
	sort.SliceStable(open, func(i, j int) bool {
		if open[i].StartedAt != open[j].StartedAt {
			return open[i].StartedAt > open[j].StartedAt
		}
		return open[i].ID > open[j].ID
	})
	if len(open) > limit {
		open = open[:limit]
	}
	return struct {
		Incidents []incidentOut `json:"incidents"`
	}{open}, nil
}

func (s *incidentStore) page(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		ID   string `json:"id"`
		Note string `json:"note"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("id", in.ID)
	c.match("id", in.ID, incidentIDPattern, "an incident id such as INC-1042")
	c.maxLen("note", in.Note, 500)
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inc, err := s.find(in.ID)
	if err != nil {
		return nil, err
	}
	if inc.status == "resolved" {
		return nil, fmt.Errorf("incident %s is resolved: nobody is paged for it", inc.id)
	}
	who := s.onCall[inc.service]
	if who == "" {
		return nil, fmt.Errorf("no on-call rota for service %q", inc.service)
	}
	s.pages++
	at := s.clock.tick()
	id := fmt.Sprintf("PG-%d", s.pages)
	text := "Paged " + who
	if in.Note != "" {
		text += ": " + in.Note
	}
	s.notes++
	inc.notes = append(inc.notes, note{id: fmt.Sprintf("N-%d", s.notes), text: text, at: at})
	return struct {
		PageID string `json:"page_id"`
		Paged  string `json:"paged"`
		At     string `json:"at"`
	}{id, who, at}, nil
}

func (s *incidentStore) addNote(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		ID   string `json:"id"`
		Text string `json:"text"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("id", in.ID)
	c.match("id", in.ID, incidentIDPattern, "an incident id such as INC-1042")
	c.need("text", in.Text)
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inc, err := s.find(in.ID)
	if err != nil {
		return nil, err
	}
	s.notes++
	n := note{id: fmt.Sprintf("N-%d", s.notes), text: in.Text, at: s.clock.tick()}
	inc.notes = append(inc.notes, n)
	return struct {
		NoteID string `json:"note_id"`
		At     string `json:"at"`
	}{n.id, n.at}, nil
}
