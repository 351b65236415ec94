package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// tickets: a ticket tracker that starts empty. Tickets get ids T-1, T-2, …
// in creation order; get returns the ones created.

// ticketURL is where a ticket would live.
const ticketURL = "https://tickets.example.com/"

type ticket struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	Body      string `json:"body"`
	Severity  string `json:"severity"`
	Status    string `json:"status"`
	URL       string `json:"url"`
	CreatedAt string `json:"created_at"`
}

type ticketStore struct {
	mu      sync.Mutex
	clock   clock
	tickets []ticket
}

func newTickets() *backend {
	s := &ticketStore{}
	return &backend{
		name:         "tickets",
		instructions: "Demo ticket tracker (vmcp). Starts empty; tickets get ids T-1, T-2, … in creation order.",
		tools: []*tool{
			{
				name:        "create",
				description: "Create a ticket. Returns its id and URL.",
				input: `{
  "type": "object",
  "properties": {
    "title": {"type": "string", "description": "One-line title.", "minLength": 1, "maxLength": 200},
    "body": {"type": "string", "description": "Description (Markdown)."},
    "severity": {"type": "string", "enum": ["critical", "high", "medium", "low"], "default": "medium", "description": "Ticket severity."}
  },
  "required": ["title", "body"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "id": {"type": "string", "description": "Ticket id, e.g. OPS-311."},
    "url": {"type": "string", "format": "uri"}
  },
  "required": ["id", "url"]
}`,
				annotations: writes("Create ticket", false, false),
				run:         s.create,
			},
			{
				name:        "get",
				description: "Get a ticket by id.",
				input: `{
  "type": "object",
  "properties": {
    "id": {"type": "string", "description": "Ticket id, e.g. OPS-311."}
  },
  "required": ["id"],
  "additionalProperties": false
}`,
				output: `{
  "type": "object",
  "properties": {
    "id": {"type": "string"},
    "title": {"type": "string"},
    "body": {"type": "string"},
    "severity": {"type": "string", "enum": ["critical", "high", "medium", "low"]},
    "status": {"type": "string", "enum": ["open", "in_progress", "closed"]},
    "url": {"type": "string", "format": "uri"},
    "created_at": {"type": "string", "format": "date-time"}
  },
  "required": ["id", "title", "body", "severity", "status", "url", "created_at"]
}`,
				annotations: readOnly("Get ticket"),
				run:         s.get,
			},
		},
	}
}

func (s *ticketStore) create(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Title    string  `json:"title"`
		Body     *string `json:"body"`
		Severity string  `json:"severity"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	if in.Severity == "" {
		in.Severity = "medium"
	}
	var c checker
	c.need("title", in.Title)
	c.maxLen("title", in.Title, 200)
	if in.Body == nil {
		c.addf("body is required")
	}
	c.oneOf("severity", in.Severity, "critical", "high", "medium", "low")
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("T-%d", len(s.tickets)+1)
	t := ticket{ID: id, Title: in.Title, Body: *in.Body, Severity: in.Severity, Status: "open", URL: ticketURL + id, CreatedAt: s.clock.tick()}
	s.tickets = append(s.tickets, t)
	return struct {
		ID  string `json:"id"`
		URL string `json:"url"`
	}{t.ID, t.URL}, nil
}

func (s *ticketStore) get(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		ID string `json:"id"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("id", in.ID)
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tickets {
		if t.ID == in.ID {
			return t, nil
		}
	}
	if len(s.tickets) == 0 {
		return nil, fmt.Errorf("ticket %q not found: no tickets have been created yet", in.ID)
	}
	return nil, fmt.Errorf("ticket %q not found; tickets: T-1 to T-%d", in.ID, len(s.tickets))
}
