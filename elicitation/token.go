package elicitation

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Claims are what a resume token binds: which run, which question (step
// and the pause's sequence number), whose, and until when.
type Claims struct {
	Run   string
	Step  string
	Owner string
	// Seq is the store's pause sequence number (state.Question.Seq): the
	// token is good for that one pause only.
	Seq uint64
	// Expiry is when the token stops being accepted (zero = never; the
	// run's own deadline still applies).
	Expiry time.Time
}

// Errors from Open. Every malformed, tampered, truncated, foreign or
// unknown-version token is ErrTokenInvalid, with no detail (nothing to
// help a forger); a genuine token past its expiry is ErrTokenExpired.
var (
	ErrTokenInvalid = errors.New("resume token is invalid")
	ErrTokenExpired = errors.New("resume token has expired")
)

const (
	// KeySize is the sealing key's length: AES-256.
	KeySize = 32

	version  = "v1."
	nonceLen = 12
	tagLen   = 16
	// maxField bounds each string claim, and so the token, so that Open
	// never decodes more than a few kilobytes.
	maxField  = 1024
	maxSealed = nonceLen + 3*(binary.MaxVarintLen16+maxField) + 2*binary.MaxVarintLen64 + 1 + binary.MaxVarintLen32 + tagLen
	maxToken  = len(version) + (maxSealed*4+2)/3
)

// additionalData binds the version into the authentication tag, so a
// token cannot be replayed under another version's rules.
var additionalData = []byte("vmcp resume token v1")

var b64 = base64.RawURLEncoding.Strict()

// Sealer seals and opens resume tokens with one key (AES-256-GCM, random
// 96-bit nonces). It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a sealer for a KeySize-byte key (state.Store.Key).
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("resume token key has %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns the token for c: "v1." and base64url (no padding) of the
// nonce, the sealed claims and the tag; about 120 characters, safe in a
// URL, a header or JSON without escaping. Run, Step and Owner must be set.
func (s *Sealer) Seal(c Claims) (string, error) {
	for _, f := range []struct{ name, v string }{{"run", c.Run}, {"step", c.Step}, {"owner", c.Owner}} {
		if f.v == "" || len(f.v) > maxField {
			return "", fmt.Errorf("seal resume token: %s must have 1 to %d bytes", f.name, maxField)
		}
	}
	plain := make([]byte, 0, 3*binary.MaxVarintLen64+len(c.Run)+len(c.Step)+len(c.Owner)+2*binary.MaxVarintLen64)
	for _, f := range []string{c.Run, c.Step, c.Owner} {
		plain = binary.AppendUvarint(plain, uint64(len(f)))
		plain = append(plain, f...)
	}
	plain = binary.AppendUvarint(plain, c.Seq)
	if c.Expiry.IsZero() {
		plain = append(plain, 0)
	} else {
		plain = append(plain, 1)
		plain = binary.AppendVarint(plain, c.Expiry.Unix())
		plain = binary.AppendUvarint(plain, uint64(c.Expiry.Nanosecond()))
	}

	sealed := make([]byte, nonceLen, nonceLen+len(plain)+tagLen)
	_, _ = rand.Read(sealed) // never fails (crypto/rand aborts the program instead)
	sealed = s.aead.Seal(sealed, sealed[:nonceLen], plain, additionalData)
	return version + b64.EncodeToString(sealed), nil
}

// Open checks token and returns its claims. It fails with ErrTokenInvalid
// for anything this sealer did not seal (any change to any byte, another
// key, another version, garbage) and with ErrTokenExpired — returning the
// claims too, which are genuine — when now is at or past the expiry. It
// does not know whether the token was used: the store's Claim does (the
// sequence number must match the pending question). It never panics.
func (s *Sealer) Open(token string, now time.Time) (Claims, error) {
	if len(token) > maxToken || !strings.HasPrefix(token, version) {
		return Claims{}, ErrTokenInvalid
	}
	body := token[len(version):]
	for i := 0; i < len(body); i++ { // the decoder would skip newlines; accept the alphabet only
		if c := body[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Claims{}, ErrTokenInvalid
		}
	}
	sealed, err := b64.DecodeString(body)
	if err != nil || len(sealed) < nonceLen+tagLen {
		return Claims{}, ErrTokenInvalid
	}
	plain, err := s.aead.Open(nil, sealed[:nonceLen], sealed[nonceLen:], additionalData)
	if err != nil {
		return Claims{}, ErrTokenInvalid
	}
	c, ok := decodeClaims(plain)
	if !ok {
		return Claims{}, ErrTokenInvalid
	}
	if !c.Expiry.IsZero() && !now.Before(c.Expiry) {
		return c, ErrTokenExpired
	}
	return c, nil
}

// decodeClaims parses what Seal wrote (authenticated, but parsed as if it
// were not).
func decodeClaims(b []byte) (Claims, bool) {
	var fields [3]string
	for i := range fields {
		n, w := binary.Uvarint(b)
		if w <= 0 || n == 0 || n > maxField || n > uint64(len(b)-w) {
			return Claims{}, false
		}
		fields[i] = string(b[w : w+int(n)])
		b = b[w+int(n):]
	}
	seq, w := binary.Uvarint(b)
	if w <= 0 {
		return Claims{}, false
	}
	b = b[w:]
	c := Claims{Run: fields[0], Step: fields[1], Owner: fields[2], Seq: seq}
	switch {
	case len(b) == 1 && b[0] == 0:
		return c, true
	case len(b) < 3 || b[0] != 1:
		return Claims{}, false
	}
	secs, w := binary.Varint(b[1:])
	if w <= 0 {
		return Claims{}, false
	}
	b = b[1+w:]
	nanos, w := binary.Uvarint(b)
	if w <= 0 || w != len(b) || nanos >= 1e9 {
		return Claims{}, false
	}
	c.Expiry = time.Unix(secs, int64(nanos)).UTC()
	return c, true
}
