package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// AuditSchema names the audit line format.
const AuditSchema = "vmcp.audit/1"

// Audit event names.
const (
	AuditSessionCreated = "session.created"
	AuditSessionClosed  = "session.closed"
	AuditAuthFailed     = "auth.failed"
	AuditAuthzDenied    = "authz.denied"
	AuditToolCalled     = "tool.called"
	AuditRunStarted     = "run.started"
	AuditRunPaused      = "run.paused"
	AuditRunAnswered    = "run.answered"
	AuditAnswerRejected = "run.answer_rejected"
	AuditRunCancelled   = "run.cancelled"
	AuditRunFinished    = "run.finished"
	AuditBackendChanged = "backend.state_changed"
	AuditRunInterrupted = "run.interrupted"
	AuditRunTakenOver   = "run.taken_over"
	AuditConfigReloaded = "config.reloaded"
)

// AuditConfig is the audit block.
type AuditConfig struct {
	// Path is the file lines are appended to; "-" is stdout; "" is off.
	Path string
	// IncludeArguments and IncludeAnswers put the values themselves (with
	// Redact applied) in the line instead of only their digest and size.
	IncludeArguments bool
	IncludeAnswers   bool
	// Redact lists key fragments whose values are replaced by
	// "[redacted]" (case-insensitive; default password, token, secret,
	// authorization).
	Redact []string
}

// Audit writes one JSON line per security-relevant event. Callers emit
// after the state commit the event reports.
type Audit struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	cfg    AuditConfig
}

func openAudit(cfg AuditConfig, w io.Writer) (*Audit, error) {
	a := &Audit{w: w, cfg: cfg}
	if len(a.cfg.Redact) == 0 {
		a.cfg.Redact = []string{"password", "token", "secret", "authorization"}
	}
	if w == nil {
		if cfg.Path == "-" {
			a.w = os.Stdout
		} else {
			f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return nil, fmt.Errorf("telemetry: audit log: %w", err)
			}
			a.w, a.closer = f, f
		}
	}
	return a, nil
}

func (a *Audit) close() error {
	if a.closer != nil {
		return a.closer.Close()
	}
	return nil
}

// Principal is who acted.
type Principal struct {
	Iss  string `json:"iss,omitempty"`
	Sub  string `json:"sub"`
	Auth string `json:"auth,omitempty"`
}

// Client is where a request came from.
type Client struct {
	Address  string `json:"address,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Name     string `json:"name,omitempty"`
}

// Target is what an event is about.
type Target struct {
	Tool     string `json:"tool,omitempty"`
	Backend  string `json:"backend,omitempty"`
	Workflow string `json:"workflow,omitempty"`
	Run      string `json:"run,omitempty"`
	Step     string `json:"step,omitempty"`
}

// AuditEvent is one line.
type AuditEvent struct {
	Schema    string         `json:"schema"`
	Time      string         `json:"time"`
	Event     string         `json:"event"`
	Outcome   string         `json:"outcome"`
	Principal *Principal     `json:"principal,omitempty"`
	Client    *Client        `json:"client,omitempty"`
	Target    *Target        `json:"target,omitempty"`
	Detail    map[string]any `json:"detail,omitempty"`
	TraceID   string         `json:"trace_id,omitempty"`
}

// Auditing reports whether audit lines are written.
func (t *T) Auditing() bool { return t != nil && t.audit != nil }

// Audit writes e (Schema, Time and TraceID are filled in). Callers call it
// after the commit the event reports. A failed write is logged and
// counted, never returned: the action already happened.
func (t *T) Audit(ctx context.Context, e AuditEvent) {
	if t == nil || t.audit == nil {
		return
	}
	e.Schema = AuditSchema
	e.Time = time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	if e.TraceID == "" {
		e.TraceID = TraceID(ctx)
	}
	if e.Outcome == "" {
		e.Outcome = "success"
	}
	b, err := json.Marshal(e)
	if err == nil {
		b = append(b, '\n')
		t.audit.mu.Lock()
		_, err = t.audit.w.Write(b)
		t.audit.mu.Unlock()
	}
	if t.m != nil {
		if err != nil {
			t.m.auditFailures.Add(ctx, 1)
		} else {
			t.m.auditEvents.Add(ctx, 1, attrs(KeyEvent.String(e.Event)))
		}
	}
	if err != nil {
		t.log.Error("audit line not written", "event", e.Event, "err", err)
	}
}

// Arguments describes tool arguments for an audit line: digest and size,
// plus the redacted value when include_arguments is set.
func (t *T) Arguments(raw []byte) map[string]any {
	if t == nil || t.audit == nil {
		return nil
	}
	return t.audit.describe(raw, t.audit.cfg.IncludeArguments)
}

// Answer describes an answer's content likewise (include_answers).
func (t *T) Answer(content any) map[string]any {
	if t == nil || t.audit == nil {
		return nil
	}
	b, _ := json.Marshal(content)
	return t.audit.describe(b, t.audit.cfg.IncludeAnswers)
}

func (a *Audit) describe(raw []byte, include bool) map[string]any {
	if len(raw) == 0 {
		raw = []byte("null")
	}
	sum := sha256.Sum256(raw)
	out := map[string]any{"sha256": hex.EncodeToString(sum[:]), "size": len(raw)}
	if include {
		var v any
		if json.Unmarshal(raw, &v) == nil {
			out["value"] = a.redact(v)
		}
	}
	return out
}

func (a *Audit) redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			if a.secretKey(k) {
				out[k] = "[redacted]"
				continue
			}
			out[k] = a.redact(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = a.redact(val)
		}
		return out
	}
	return v
}

func (a *Audit) secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, r := range a.cfg.Redact {
		if strings.Contains(k, strings.ToLower(r)) {
			return true
		}
	}
	return false
}
