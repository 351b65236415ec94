// Package outauth obtains the credentials vmcp sends to a backend
// (`outgoing_auth`): nothing, static headers, an RFC 8693 token exchange of
// the caller's token, an OAuth2 client-credentials token, or the caller's
// own token (pass_through). It knows nothing of MCP: package backends asks
// a Strategy for the headers of each outgoing HTTP request.
//
// Secrets (header values, client secrets, callers' tokens, issued tokens)
// never appear in errors or logs: Secret redacts itself when printed,
// errors name the backend and the field, and token caches are keyed by
// hashes.
package outauth

import (
	"context"
	"log/slog"
)

// Secret is a credential. It prints, logs and marshals as "[redacted]";
// Reveal returns the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value (for the one place that sends it).
func (s Secret) Reveal() string { return string(s) }

// String redacts.
func (s Secret) String() string { return redacted }

// GoString redacts (%#v).
func (s Secret) GoString() string { return redacted }

// LogValue redacts (slog).
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText redacts.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Subject is the authenticated caller a backend request is made for: the
// principal's name and the bearer token it presented to vmcp (empty when
// the caller came without one, as over stdio).
type Subject struct {
	Principal string
	Token     Secret
}

type subjectKey struct{}

// WithSubject tags ctx with the caller (package server does it once the
// incoming token is verified).
func WithSubject(ctx context.Context, s Subject) context.Context {
	if s.Principal == "" {
		return ctx
	}
	return context.WithValue(ctx, subjectKey{}, s)
}

// SubjectFrom returns the caller ctx was tagged with.
func SubjectFrom(ctx context.Context) (Subject, bool) {
	s, ok := ctx.Value(subjectKey{}).(Subject)
	return s, ok
}
