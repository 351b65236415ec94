package outauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Strategy types (the values of outgoing_auth's `type`).
const (
	None              = "none"
	Refuse            = "error"
	Headers           = "headers"
	TokenExchange     = "token_exchange"
	ClientCredentials = "client_credentials"
	PassThrough       = "pass_through"
)

// Config is one backend's strategy, with its secrets already read (package
// server reads value_env, value_file, client_secret_env and
// client_secret_file).
type Config struct {
	// Backend names the backend, for errors and cache keys.
	Backend string
	Type    string
	// Headers are sent on every request. For token_exchange and
	// pass_through they are also all that requests made without a caller
	// (catalogue, health checks) carry.
	Headers map[string]Secret
	// TokenURL, Audience and Scopes: token_exchange and
	// client_credentials.
	TokenURL string
	Audience string
	Scopes   []string
	// ClientID and ClientSecret authenticate vmcp to the token endpoint
	// (HTTP Basic, RFC 6749 §2.3.1); a ClientID without a secret is sent as
	// the client_id form field (a public client).
	ClientID     string
	ClientSecret Secret
	// Service, for token_exchange and pass_through, supplies requests
	// made without a caller (headers or client_credentials); without it
	// they carry Headers only.
	Service *Config
}

// Options tune New; nil is valid.
type Options struct {
	// HTTPClient calls the token endpoint (default: a client with a 30s
	// timeout).
	HTTPClient *http.Client
	// Logger receives the pass_through warning.
	Logger *slog.Logger
	// Now is the clock of the token caches (default time.Now).
	Now func() time.Time
}

// Strategy supplies the credentials of one backend.
type Strategy struct {
	cfg     Config
	headers map[string]string
	client  *http.Client
	now     func() time.Time
	cache   *cache
	service *Strategy
}

// Error is a failure to obtain credentials (or a refusal); it names the
// backend and the strategy and never holds a secret.
type Error struct {
	Backend, Type, Msg string
	Err                error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("backend %q: outgoing_auth %s: %s", e.Backend, e.Type, e.Msg)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ErrRefused is wrapped by the errors of strategy `error`.
var ErrRefused = errors.New("calls to this backend are refused")

// ErrNoCallerToken is wrapped when a user-bound strategy has no caller
// token to work with.
var ErrNoCallerToken = errors.New("this call carries no caller token (it did not come over authenticated HTTP)")

// New checks cfg and builds its strategy. A nil or empty config is none.
func New(cfg Config, opts *Options) (*Strategy, error) {
	if opts == nil {
		opts = &Options{}
	}
	if cfg.Type == "" {
		cfg.Type = None
	}
	s := &Strategy{cfg: cfg, client: opts.HTTPClient, now: opts.Now, headers: map[string]string{}}
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second}
	}
	if s.now == nil {
		s.now = time.Now
	}
	for k, v := range cfg.Headers {
		s.headers[k] = v.Reveal()
	}
	fail := func(format string, args ...any) (*Strategy, error) {
		return nil, &Error{Backend: cfg.Backend, Type: cfg.Type, Msg: fmt.Sprintf(format, args...)}
	}
	switch cfg.Type {
	case None, Refuse, PassThrough:
	case Headers:
		if len(cfg.Headers) == 0 {
			return fail("headers is empty")
		}
	case TokenExchange, ClientCredentials:
		if cfg.TokenURL == "" {
			return fail("token_url is required")
		}
		if !strings.HasPrefix(cfg.TokenURL, "https://") && !loopbackHTTP(cfg.TokenURL) {
			return fail("token_url must be https (plain http only on a loopback host)")
		}
		if cfg.Type == ClientCredentials && (cfg.ClientID == "" || cfg.ClientSecret == "") {
			return fail("client_id and a client secret (client_secret_env or client_secret_file) are required")
		}
		if cfg.ClientSecret != "" && cfg.ClientID == "" {
			return fail("a client secret needs client_id")
		}
		s.cache = newCache()
	default:
		return fail("unknown type (none, error, headers, token_exchange, client_credentials and pass_through are)")
	}
	if cfg.Service != nil {
		if cfg.Type != TokenExchange && cfg.Type != PassThrough {
			return fail("service credentials apply only to token_exchange and pass_through")
		}
		if t := cfg.Service.Type; t != Headers && t != ClientCredentials {
			return fail("service: type must be headers or client_credentials, not %q", t)
		}
		svc := *cfg.Service
		svc.Backend = cfg.Backend
		var err error
		if s.service, err = New(svc, opts); err != nil {
			return nil, err
		}
	}
	if cfg.Type == PassThrough && opts.Logger != nil {
		opts.Logger.Warn("outgoing_auth pass_through: callers' own tokens are forwarded to this backend; prefer token_exchange", "backend", cfg.Backend)
	}
	return s, nil
}

// Type is the strategy's type.
func (s *Strategy) Type() string { return s.cfg.Type }

// UserBound reports whether the credentials depend on the caller
// (token_exchange, pass_through): such a backend needs a session per
// principal.
func (s *Strategy) UserBound() bool {
	return s != nil && (s.cfg.Type == TokenExchange || s.cfg.Type == PassThrough)
}

// SendsHeaders reports whether the strategy puts anything on requests
// (everything but none and error); only HTTP backends can carry it.
func (s *Strategy) SendsHeaders() bool {
	return s != nil && s.cfg.Type != None && s.cfg.Type != Refuse
}

// Refused is the error of strategy `error` (nil for any other).
func (s *Strategy) Refused() error {
	if s == nil || s.cfg.Type != Refuse {
		return nil
	}
	return &Error{Backend: s.cfg.Backend, Type: Refuse, Msg: "no outgoing credentials are configured for it (add outgoing_auth.backends." + s.cfg.Backend + ")", Err: ErrRefused}
}

// HeaderNames lists the headers the strategy may set (for status output;
// never their values).
func (s *Strategy) HeaderNames() []string {
	if s == nil {
		return nil
	}
	var out []string
	for k := range s.headers {
		out = append(out, k)
	}
	if s.cfg.Type == TokenExchange || s.cfg.Type == ClientCredentials || s.cfg.Type == PassThrough {
		out = append(out, "Authorization")
	}
	sort.Strings(out)
	return out
}

// Apply sets the strategy's headers on h for one request. subj is the
// caller, or nil for requests made on the backend's own behalf (connect,
// catalogue, health checks), which carry only service credentials:
// headers, or a client_credentials token, never a user's.
func (s *Strategy) Apply(ctx context.Context, subj *Subject, h http.Header) error {
	if s == nil {
		return nil
	}
	if err := s.Refused(); err != nil {
		return err
	}
	for k, v := range s.headers {
		h.Set(k, v)
	}
	switch s.cfg.Type {
	case ClientCredentials:
		tok, err := s.clientCredentials(ctx)
		if err != nil {
			return err
		}
		h.Set("Authorization", "Bearer "+tok.Reveal())
	case TokenExchange, PassThrough:
		if subj == nil {
			return s.service.Apply(ctx, nil, h)
		}
		if subj.Token == "" {
			return &Error{Backend: s.cfg.Backend, Type: s.cfg.Type, Msg: "principal " + fmt.Sprintf("%q", subj.Principal), Err: ErrNoCallerToken}
		}
		tok := subj.Token
		if s.cfg.Type == TokenExchange {
			var err error
			if tok, err = s.exchange(ctx, subj); err != nil {
				return err
			}
		}
		h.Set("Authorization", "Bearer "+tok.Reveal())
	}
	return nil
}

// loopbackHTTP accepts http://127.0.0.1…, http://[::1]… and
// http://localhost… (local token endpoints, tests).
func loopbackHTTP(u string) bool {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		return false
	}
	host := rest
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		host = host[:i]
	}
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		return end > 0 && host[1:end] == "::1"
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return host == "localhost" || strings.HasPrefix(host, "127.")
}
