package backends

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/vmcp-dev/vmcp/backends/outauth"
)

// Outgoing credentials (Spec.Auth, package outauth). Every HTTP request to
// a URL backend goes through authTransport, which asks the strategy for
// its headers: the shared session (connect, catalogue, health checks) is
// made on the backend's own behalf and gets service credentials only
// (headers, a client_credentials token); a user-bound strategy
// (token_exchange, pass_through) gets one session per principal (route),
// whose requests carry that principal's credentials.

// authTransport sets the backend's credentials on each request.
type authTransport struct {
	base http.RoundTripper
	c    *Conn
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if err := t.c.spec.Auth.Apply(req.Context(), t.c.subject.Load(), r.Header); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	return t.base.RoundTrip(r)
}

// authCause returns the outgoing-auth failure inside err (which the
// transport wraps in layers naming the URL), or err.
func authCause(err error) error {
	var ae *outauth.Error
	if errors.As(err, &ae) {
		return ae
	}
	return err
}

// checkAuth rejects strategies a backend cannot carry: headers exist only
// on HTTP.
func checkAuth(s *Spec) error {
	a := s.Auth
	if a == nil || !a.SendsHeaders() || s.URL != "" {
		return nil
	}
	return fmt.Errorf("backend %q: outgoing_auth %s sends HTTP headers, and this backend is %s (only url backends take them)", s.Name, a.Type(), s.Kind())
}

// principalSubject is the caller of a user-bound backend's call.
func principalSubject(s *Spec, subj outauth.Subject, ok bool) (outauth.Subject, error) {
	if !ok || subj.Token == "" {
		who := "this call"
		if ok {
			who = fmt.Sprintf("principal %q", subj.Principal)
		}
		return outauth.Subject{}, &outauth.Error{Backend: s.Name, Type: s.Auth.Type(), Msg: who + " cannot be forwarded", Err: outauth.ErrNoCallerToken}
	}
	return subj, nil
}
