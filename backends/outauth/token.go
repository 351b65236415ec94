package outauth

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Token endpoint calls (RFC 6749 §4.4 client credentials, RFC 8693 token
// exchange) and the cache of their results.

const (
	grantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantClientCredentials = "client_credentials"
	tokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"

	// maxCached bounds a strategy's cache; past it, expired entries are
	// dropped, and if that is not enough, all of them.
	maxCached = 10000
	// noExpiry is how long a token without expires_in is kept.
	noExpiry = 60 * time.Second
)

// exchange trades the caller's token for one scoped to the backend,
// cached per principal+backend+audience+scopes+SHA-256(caller token).
func (s *Strategy) exchange(ctx context.Context, subj *Subject) (Secret, error) {
	key := cacheKey(s.cfg.Backend, s.cfg.Audience, strings.Join(s.cfg.Scopes, " "), subj.Principal, subj.Token.Reveal())
	return s.cache.get(key, s.now, func() (Secret, time.Duration, error) {
		form := url.Values{
			"grant_type":           {grantTokenExchange},
			"subject_token":        {subj.Token.Reveal()},
			"subject_token_type":   {tokenTypeAccessToken},
			"requested_token_type": {tokenTypeAccessToken},
		}
		return s.post(ctx, form)
	})
}

// clientCredentials gets vmcp's own token for the backend.
func (s *Strategy) clientCredentials(ctx context.Context) (Secret, error) {
	key := cacheKey(s.cfg.Backend, s.cfg.Audience, strings.Join(s.cfg.Scopes, " "), "", "")
	return s.cache.get(key, s.now, func() (Secret, time.Duration, error) {
		return s.post(ctx, url.Values{"grant_type": {grantClientCredentials}})
	})
}

var errorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// post calls the token endpoint. Errors carry the status and the OAuth
// error code, never the response's description (it is the endpoint's text
// and could echo what was sent).
func (s *Strategy) post(ctx context.Context, form url.Values) (Secret, time.Duration, error) {
	fail := func(msg string, err error) (Secret, time.Duration, error) {
		return "", 0, &Error{Backend: s.cfg.Backend, Type: s.cfg.Type, Msg: msg, Err: err}
	}
	if s.cfg.Audience != "" {
		form.Set("audience", s.cfg.Audience)
	}
	if len(s.cfg.Scopes) > 0 {
		form.Set("scope", strings.Join(s.cfg.Scopes, " "))
	}
	if s.cfg.ClientID != "" && s.cfg.ClientSecret == "" {
		form.Set("client_id", s.cfg.ClientID)
	}
	// The token request must not die with the backend call that caused
	// it: a second caller may be waiting on the same cache entry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fail("token_url", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if s.cfg.ClientSecret != "" {
		req.SetBasicAuth(url.QueryEscape(s.cfg.ClientID), url.QueryEscape(s.cfg.ClientSecret.Reveal()))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fail("token endpoint unreachable", stripURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail("reading the token endpoint's answer", err)
	}
	var r struct {
		AccessToken string      `json:"access_token"`
		TokenType   string      `json:"token_type"`
		ExpiresIn   json.Number `json:"expires_in"`
		Error       string      `json:"error"`
	}
	jerr := json.Unmarshal(body, &r)
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("token endpoint answered %d", resp.StatusCode)
		if jerr == nil && errorCode.MatchString(r.Error) {
			msg += " (" + r.Error + ")"
		}
		return fail(msg, nil)
	}
	if jerr != nil {
		return fail("token endpoint answered with no JSON", nil)
	}
	if r.AccessToken == "" {
		return fail("token endpoint answered without access_token", nil)
	}
	if r.TokenType != "" && !strings.EqualFold(r.TokenType, "bearer") && !strings.EqualFold(r.TokenType, "N_A") {
		return fail(fmt.Sprintf("token endpoint issued a token of type %q; only bearer tokens are supported", truncate(r.TokenType, 32)), nil)
	}
	life := noExpiry
	if r.ExpiresIn != "" {
		n, err := r.ExpiresIn.Int64()
		if err != nil || n <= 0 {
			return fail("token endpoint answered an unusable expires_in", nil)
		}
		life = time.Duration(n) * time.Second
	}
	return Secret(r.AccessToken), life, nil
}

// stripURLError keeps the cause of a failed request; the URL is the
// configured token_url, said by the message already.
func stripURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// cacheKey hashes the parts of a cache key (each length-prefixed), so the
// cache never holds a caller's token.
func cacheKey(parts ...string) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// cache holds issued tokens until shortly before they expire. One fetch
// per key at a time: concurrent callers wait for it and share the result.
type cache struct {
	mu sync.Mutex
	m  map[[32]byte]*entry
}

type entry struct {
	mu    sync.Mutex
	tok   Secret
	until time.Time
}

func newCache() *cache { return &cache{m: map[[32]byte]*entry{}} }

// margin is how long before expiry a token stops being used: 30s, or half
// the lifetime of short-lived tokens.
func margin(life time.Duration) time.Duration {
	return min(30*time.Second, life/2)
}

func (c *cache) get(key [32]byte, now func() time.Time, fetch func() (Secret, time.Duration, error)) (Secret, error) {
	c.mu.Lock()
	e := c.m[key]
	if e == nil {
		if len(c.m) >= maxCached {
			c.sweep(now())
		}
		e = &entry{}
		c.m[key] = e
	}
	c.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tok != "" && now().Before(e.until) {
		return e.tok, nil
	}
	tok, life, err := fetch()
	if err != nil {
		return "", err
	}
	e.tok, e.until = tok, now().Add(life-margin(life))
	return tok, nil
}

// sweep drops expired entries, or everything if none has expired (c.mu
// held).
func (c *cache) sweep(t time.Time) {
	for k, e := range c.m {
		if e.mu.TryLock() {
			if !t.Before(e.until) {
				delete(c.m, k)
			}
			e.mu.Unlock()
		}
	}
	if len(c.m) >= maxCached {
		c.m = map[[32]byte]*entry{}
	}
}

// Cached counts the tokens a strategy holds (for tests and status).
func (s *Strategy) Cached() int {
	if s == nil || s.cache == nil {
		return 0
	}
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	return len(s.cache.m)
}
