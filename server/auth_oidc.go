package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/vmcp-dev/vmcp/dsl"
)

// incoming_auth type oidc: bearer tokens are JWTs signed by the issuer.
// The signing keys come from the issuer's JWKS (found by OpenID Connect
// discovery unless jwks_url is set), are cached, and are fetched again when
// a token names a key id that is not cached (at most once per
// minRefresh, so a flood of made-up key ids cannot turn vmcp into a load
// generator against the issuer) or when the cache is older than maxKeyAge.
// A fetch that fails after startup keeps the cached keys.

const (
	defaultClockSkew = 60 * time.Second
	defaultMinJWKS   = 10 * time.Second
	maxKeyAge        = time.Hour
	oidcFetchTimeout = 10 * time.Second
	maxOIDCDoc       = 1 << 20
	maxTokenLen      = 16 << 10
	minRSABits       = 2048
)

// acceptedAlgs are the signature algorithms vmcp verifies: asymmetric
// only. `none` and the HMAC family (HS256…) are refused, so a public key
// can never be used as an HMAC secret.
var acceptedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// oidcVerifier is the oidc credentials strategy.
type oidcVerifier struct {
	issuer         string
	audience       string
	jwksURL        string
	skew           time.Duration
	principalClaim string
	groupsClaim    string
	client         *http.Client
	log            func() *slog.Logger
	// minRefresh is the least time between two JWKS fetches.
	minRefresh time.Duration

	mu      sync.RWMutex
	keys    []jose.JSONWebKey // public signing keys
	fetched time.Time         // last successful fetch

	refreshMu sync.Mutex
	lastTry   time.Time // last fetch attempt; under refreshMu

	// verified remembers tokens that passed every check, by their SHA-256
	// (never the token itself), until they expire, so a client reusing its
	// token does not pay for the signature check on every request. It is
	// emptied whenever the issuer's keys are fetched again (a retired key
	// stops working at once).
	cacheMu  sync.Mutex
	verified map[[32]byte]verifiedToken
}

type verifiedToken struct {
	p   Principal
	exp time.Time
}

// maxVerified bounds the cache; when full it starts over.
const maxVerified = 10000

// newOIDCVerifier runs discovery (unless jwks_url is set) and fetches the
// keys; any failure is a startup error naming the issuer.
func newOIDCVerifier(ctx context.Context, cfg *dsl.Config, log func() *slog.Logger) (*oidcVerifier, error) {
	ia := cfg.IncomingAuth
	pos := cfg.Src.NodePos(ia.Node)
	v := &oidcVerifier{
		issuer:         ia.Issuer.Value,
		audience:       ia.Audience.Value,
		jwksURL:        ia.JWKSURL.Value,
		skew:           ia.ClockSkew.Value,
		principalClaim: ia.PrincipalClaim.Value,
		groupsClaim:    ia.GroupsClaim.Value,
		client:         &http.Client{Timeout: oidcFetchTimeout},
		log:            log,
		minRefresh:     defaultMinJWKS,
	}
	if v.issuer == "" || v.audience == "" {
		return nil, fmt.Errorf("%s: incoming_auth type oidc needs issuer and audience", pos)
	}
	if !ia.ClockSkew.Set {
		v.skew = defaultClockSkew
	}
	if v.skew < 0 {
		return nil, fmt.Errorf("%s: incoming_auth.clock_skew must not be negative", pos)
	}
	if v.principalClaim == "" {
		v.principalClaim = "sub"
	}
	if v.groupsClaim == "" {
		v.groupsClaim = "groups"
	}
	if err := secureURL(v.issuer); err != nil {
		return nil, fmt.Errorf("%s: incoming_auth.issuer %s: %v", pos, v.issuer, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*oidcFetchTimeout)
	defer cancel()
	if v.jwksURL == "" {
		u, err := v.discover(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: incoming_auth: OIDC discovery for issuer %s failed: %v", pos, v.issuer, err)
		}
		v.jwksURL = u
	}
	if err := secureURL(v.jwksURL); err != nil {
		return nil, fmt.Errorf("%s: incoming_auth: JWKS URL %s of issuer %s: %v", pos, v.jwksURL, v.issuer, err)
	}
	v.lastTry = time.Now()
	if err := v.fetchKeys(ctx); err != nil {
		return nil, fmt.Errorf("%s: incoming_auth: fetching the signing keys of issuer %s from %s: %v", pos, v.issuer, v.jwksURL, err)
	}
	return v, nil
}

// secureURL accepts https URLs, and http only on a loopback host (a local
// issuer for development and tests): keys fetched over plain HTTP from
// elsewhere could be replaced on the way.
func secureURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); strings.EqualFold(h, "localhost") || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return errors.New("must use https (http is accepted only on a loopback host)")
	}
	return errors.New("must use https")
}

// discover reads <issuer>/.well-known/openid-configuration and returns
// its jwks_uri. The document must name the same issuer (OpenID Connect
// Discovery §4.3).
func (v *oidcVerifier) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(v.issuer, "/") + "/.well-known/openid-configuration"
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := v.getJSON(ctx, u, &doc); err != nil {
		return "", err
	}
	if doc.Issuer != v.issuer {
		return "", fmt.Errorf("%s names issuer %q, not %q", u, doc.Issuer, v.issuer)
	}
	if doc.JWKSURI == "" {
		return "", fmt.Errorf("%s has no jwks_uri", u)
	}
	return doc.JWKSURI, nil
}

func (v *oidcVerifier) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxOIDCDoc+1))
	if err != nil {
		return fmt.Errorf("GET %s: %v", u, err)
	}
	if len(b) > maxOIDCDoc {
		return fmt.Errorf("GET %s: document larger than %d bytes", u, maxOIDCDoc)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s: %v", u, err)
	}
	return nil
}

// fetchKeys replaces the cached keys with the issuer's current JWKS. Keys
// vmcp cannot use (private or symmetric keys, encryption keys, unknown
// types, RSA below 2048 bits) are skipped; a set with no usable key is an
// error and leaves the cache as it was.
func (v *oidcVerifier) fetchKeys(ctx context.Context) error {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := v.getJSON(ctx, v.jwksURL, &set); err != nil {
		return err
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || !k.Valid() || !k.IsPublic() {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if rk, ok := k.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%s has no usable signing key", v.jwksURL)
	}
	v.mu.Lock()
	v.keys, v.fetched = keys, time.Now()
	v.mu.Unlock()
	v.cacheMu.Lock()
	v.verified = nil
	v.cacheMu.Unlock()
	return nil
}

// refresh fetches the keys again unless that was tried less than
// minRefresh ago; concurrent callers wait for that one fetch. A failure
// keeps the cached keys.
func (v *oidcVerifier) refresh(ctx context.Context) {
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	if time.Since(v.lastTry) < v.minRefresh {
		return
	}
	v.lastTry = time.Now()
	v.fetchLogged(context.WithoutCancel(ctx))
}

// refreshInBackground is refresh for keys that are merely old: the request
// goes on with the cached keys, and nobody waits for an issuer that is slow
// or down.
func (v *oidcVerifier) refreshInBackground() {
	if !v.refreshMu.TryLock() {
		return // a fetch is under way
	}
	if time.Since(v.lastTry) < v.minRefresh {
		v.refreshMu.Unlock()
		return
	}
	v.lastTry = time.Now()
	go func() {
		defer v.refreshMu.Unlock()
		v.fetchLogged(context.Background())
	}()
}

func (v *oidcVerifier) fetchLogged(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, oidcFetchTimeout)
	defer cancel()
	if err := v.fetchKeys(ctx); err != nil && v.log != nil {
		v.log().Warn("incoming_auth: refreshing the OIDC signing keys failed; keeping the cached keys", "issuer", v.issuer, "jwks_url", v.jwksURL, "err", err)
	}
}

// candidates returns the cached keys that may have signed a token with
// this kid and alg, and whether the cache is stale.
func (v *oidcVerifier) candidates(kid string, alg jose.SignatureAlgorithm) ([]jose.JSONWebKey, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []jose.JSONWebKey
	for _, k := range v.keys {
		if (kid == "" || k.KeyID == kid) && keyFits(k, alg) {
			out = append(out, k)
		}
	}
	return out, time.Since(v.fetched) > maxKeyAge
}

// keyFits reports whether a key may verify alg: the key's type (and curve)
// match the algorithm, and its own alg, if it states one, is alg.
func keyFits(k jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(string(alg), "RS") || strings.HasPrefix(string(alg), "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return key.Curve == elliptic.P256()
		case jose.ES384:
			return key.Curve == elliptic.P384()
		case jose.ES512:
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// authenticate verifies a JWT: accepted algorithm, signature by one of the
// issuer's keys, iss, aud, exp (required), nbf and iat within clock_skew,
// and a non-empty principal claim.
func (v *oidcVerifier) authenticate(ctx context.Context, raw string) (Principal, error) {
	if len(raw) > maxTokenLen {
		return Principal{}, authError("token too long")
	}
	sum := sha256.Sum256([]byte(raw))
	v.cacheMu.Lock()
	hit, ok := v.verified[sum]
	v.cacheMu.Unlock()
	if ok && time.Now().Before(hit.exp) {
		return hit.p, nil
	}
	p, exp, err := v.verify(ctx, raw)
	if err != nil {
		return Principal{}, err
	}
	v.cacheMu.Lock()
	if v.verified == nil || len(v.verified) >= maxVerified {
		v.verified = map[[32]byte]verifiedToken{}
	}
	v.verified[sum] = verifiedToken{p: p, exp: exp}
	v.cacheMu.Unlock()
	return p, nil
}

// verify checks a token fully: signature, algorithm, issuer, audience and
// times. It returns the principal and the token's expiry.
func (v *oidcVerifier) verify(ctx context.Context, raw string) (Principal, time.Time, error) {
	tok, err := jwt.ParseSigned(raw, acceptedAlgs)
	if err != nil {
		return Principal{}, time.Time{}, parseError(raw)
	}
	if len(tok.Headers) != 1 {
		return Principal{}, time.Time{}, authError("malformed token")
	}
	kid, alg := tok.Headers[0].KeyID, jose.SignatureAlgorithm(tok.Headers[0].Algorithm)

	keys, stale := v.candidates(kid, alg)
	switch {
	case len(keys) == 0:
		// An unknown key id: the issuer may have rotated its keys.
		v.refresh(ctx)
		keys, _ = v.candidates(kid, alg)
	case stale:
		v.refreshInBackground()
	}
	if len(keys) == 0 {
		if kid != "" {
			return Principal{}, time.Time{}, authError("token is signed with an unknown key")
		}
		return Principal{}, time.Time{}, authError("no signing key of the issuer fits the token's algorithm")
	}

	var std jwt.Claims
	var all map[string]any
	verified := false
	for _, k := range keys {
		if tok.Claims(k.Key, &std, &all) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Principal{}, time.Time{}, authError("bad signature, or malformed claims")
	}

	err = std.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}}, v.skew)
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return Principal{}, time.Time{}, authError("wrong issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return Principal{}, time.Time{}, authError("wrong audience")
	case errors.Is(err, jwt.ErrExpired):
		return Principal{}, time.Time{}, authError("token expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return Principal{}, time.Time{}, authError("token not yet valid (nbf)")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Principal{}, time.Time{}, authError("token issued in the future (iat)")
	case err != nil:
		return Principal{}, time.Time{}, authError("invalid claims")
	}
	if std.Expiry == nil {
		return Principal{}, time.Time{}, authError("token has no exp claim")
	}

	name, _ := all[v.principalClaim].(string)
	if name == "" {
		return Principal{}, time.Time{}, authError("token has no " + v.principalClaim + " claim")
	}
	p := Principal{Name: name, Claims: all}
	switch g := all[v.groupsClaim].(type) {
	case string:
		p.Groups = []string{g}
	case []any:
		for _, e := range g {
			if s, ok := e.(string); ok {
				p.Groups = append(p.Groups, s)
			}
		}
	}
	return p, std.Expiry.Time(), nil
}

var safeAlg = regexp.MustCompile(`^[A-Za-z0-9+_-]{1,16}$`)

// parseError explains why a token did not parse, naming the algorithm
// when that is the reason (and only when it is a plain name: nothing of
// the token is echoed otherwise).
func parseError(raw string) error {
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return authError("malformed token (not a JWT)")
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return authError("malformed token header")
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &h) != nil {
		return authError("malformed token header")
	}
	for _, a := range acceptedAlgs {
		if string(a) == h.Alg {
			return authError("malformed token")
		}
	}
	if safeAlg.MatchString(h.Alg) {
		return authError(fmt.Sprintf("signing algorithm %s is not accepted (use RS*, PS*, ES* or EdDSA)", h.Alg))
	}
	return authError("signing algorithm is not accepted (use RS*, PS*, ES* or EdDSA)")
}
