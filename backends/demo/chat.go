package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// chat: posts are kept in memory, in order; any channel whose name fits
// the pattern exists. Message ids are M-1, M-2, … in posting order.

type message struct {
	id, channel, text, at string
}

type chatStore struct {
	mu       sync.Mutex
	clock    clock
	messages []message
}

func newChat() *backend {
	s := &chatStore{}
	return &backend{
		name:         "chat",
		instructions: "Demo chat (vmcp). Posts are kept in memory; every channel named like #name exists.",
		tools: []*tool{{
			name:        "post",
			description: "Post a message to a chat channel. Every call posts a new message.",
			input: `{
  "type": "object",
  "properties": {
    "channel": {"type": "string", "description": "Channel name with its #, e.g. #payments-oncall.", "pattern": "^#[a-z0-9_-]+$"},
    "text": {"type": "string", "description": "Message text (Markdown).", "minLength": 1, "maxLength": 4000}
  },
  "required": ["channel", "text"],
  "additionalProperties": false
}`,
			output: `{
  "type": "object",
  "properties": {
    "message_id": {"type": "string"},
    "channel": {"type": "string"},
    "at": {"type": "string", "format": "date-time"}
  },
  "required": ["message_id", "channel", "at"]
}`,
			annotations: writes("Post to chat", false, true),
			run:         s.post,
		}},
	}
}

func (s *chatStore) post(_ context.Context, raw json.RawMessage) (any, error) {
	var in struct {
		Channel string `json:"channel"`
		Text    string `json:"text"`
	}
	if err := decodeArgs(raw, &in); err != nil {
		return nil, err
	}
	var c checker
	c.need("channel", in.Channel)
	c.match("channel", in.Channel, channelPattern, "a channel name such as #payments-oncall")
	c.need("text", in.Text)
	c.maxLen("text", in.Text, 4000)
	if err := c.err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := message{id: fmt.Sprintf("M-%d", len(s.messages)+1), channel: in.Channel, text: in.Text, at: s.clock.tick()}
	s.messages = append(s.messages, m)
	return struct {
		MessageID string `json:"message_id"`
		Channel   string `json:"channel"`
		At        string `json:"at"`
	}{m.id, m.channel, m.at}, nil
}
