package elicitation

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	testKey  = bytes.Repeat([]byte{7}, KeySize)
	otherKey = bytes.Repeat([]byte{8}, KeySize)
	now      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func sealer(t testing.TB, key []byte) *Sealer {
	t.Helper()
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample() Claims {
	return Claims{Run: "r_0123456789abcdefghijkl", Step: "approve", Owner: "alice", Seq: 3, Expiry: now.Add(time.Hour)}
}

func TestRoundTrip(t *testing.T) {
	s := sealer(t, testKey)
	tests := []Claims{
		sample(),
		{Run: "r_x", Step: "s", Owner: "anonymous"}, // no expiry
		{Run: "r_x", Step: "ünïcödé step", Owner: "https://issuer.example\x00sub|42", Seq: 1<<64 - 1, Expiry: now.Add(time.Nanosecond)},
		{Run: strings.Repeat("r", 1024), Step: strings.Repeat("s", 1024), Owner: strings.Repeat("o", 1024), Expiry: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Run: "r_x", Step: "s", Owner: "o", Expiry: time.Unix(0, 0).Add(time.Hour)}, // long expired, below
	}
	for _, c := range tests {
		tok, err := s.Seal(c)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, "v1.") || strings.ContainsAny(tok, "+/=") {
			t.Fatalf("token %q is not v1 base64url", tok)
		}
		at := now
		if !c.Expiry.IsZero() && c.Expiry.Before(now) {
			at = c.Expiry.Add(-time.Second)
		}
		got, err := s.Open(tok, at)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Fatalf("claims (-want +got):\n%s", diff)
		}
	}
	tok, _ := s.Seal(sample())
	t.Logf("a typical token (%d characters): %s", len(tok), tok)
}

func TestTokensAreFresh(t *testing.T) {
	s := sealer(t, testKey)
	a, _ := s.Seal(sample())
	b, _ := s.Seal(sample())
	if a == b {
		t.Fatal("sealing the same claims twice gave the same token")
	}
}

func TestTamperAnyByte(t *testing.T) {
	s := sealer(t, testKey)
	tok, err := s.Seal(sample())
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(tok) {
		for _, repl := range []byte{'A', 'B', '_', '-', '0', '.', '=', '\n', 0, 0xff} {
			if tok[i] == repl {
				continue
			}
			bad := tok[:i] + string([]byte{repl}) + tok[i+1:]
			if _, err := s.Open(bad, now); !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("byte %d set to %q: got %v, want ErrTokenInvalid", i, repl, err)
			}
		}
	}
}

func TestTruncatedAndExtended(t *testing.T) {
	s := sealer(t, testKey)
	tok, _ := s.Seal(sample())
	for n := range len(tok) {
		if _, err := s.Open(tok[:n], now); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("first %d bytes: got %v", n, err)
		}
	}
	for _, extra := range []string{"A", "AA", "AAAA", "\n", "."} {
		if _, err := s.Open(tok+extra, now); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("with %q appended: got %v", extra, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	tok, _ := sealer(t, testKey).Seal(sample())
	if _, err := sealer(t, otherKey).Open(tok, now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("got %v", err)
	}
}

func TestExpired(t *testing.T) {
	s := sealer(t, testKey)
	c := sample()
	tok, _ := s.Seal(c)
	tests := []struct {
		at   time.Time
		want error
	}{
		{c.Expiry.Add(-time.Nanosecond), nil},
		{c.Expiry, ErrTokenExpired},
		{c.Expiry.Add(time.Hour), ErrTokenExpired},
	}
	for _, tt := range tests {
		got, err := s.Open(tok, tt.at)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Fatalf("at %v: got %v, want %v", tt.at, err, tt.want)
		}
		if got.Run != c.Run {
			t.Fatalf("at %v: claims %+v", tt.at, got)
		}
	}
}

func TestGarbage(t *testing.T) {
	s := sealer(t, testKey)
	for _, tok := range []string{
		"", "v1", "v1.", "v2.AAAA", "V1.AAAA", "v1.!!!!", "v1.AAAA", "v1." + strings.Repeat("A", 38),
		"v1." + strings.Repeat("A", 5000), strings.Repeat("\x00", 64), "v1.🙂🙂🙂",
	} {
		if _, err := s.Open(tok, now); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("%q: got %v", tok, err)
		}
	}
}

func TestNewSealerAndSealRefuse(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := NewSealer(make([]byte, n)); err == nil {
			t.Fatalf("a %d-byte key was accepted", n)
		}
	}
	s := sealer(t, testKey)
	for _, c := range []Claims{{Step: "s", Owner: "o"}, {Run: "r", Owner: "o"}, {Run: "r", Step: "s"},
		{Run: strings.Repeat("r", 1025), Step: "s", Owner: "o"}} {
		if _, err := s.Seal(c); err == nil {
			t.Fatalf("sealed %+v", c)
		}
	}
}

func TestDecodeClaimsRejectsMalformed(t *testing.T) {
	// What an attacker with the key could feed the parser (Open only gets
	// here after authentication).
	for _, b := range [][]byte{nil, {0}, {1, 'r'}, {1, 'r', 1, 's', 1, 'o'}, {1, 'r', 1, 's', 1, 'o', 0},
		{1, 'r', 1, 's', 1, 'o', 0, 2}, {1, 'r', 1, 's', 1, 'o', 0, 0, 0}, {1, 'r', 1, 's', 1, 'o', 0, 1, 0},
		{1, 'r', 1, 's', 1, 'o', 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if c, ok := decodeClaims(b); ok {
			t.Fatalf("%x decoded to %+v", b, c)
		}
	}
	if _, ok := decodeClaims([]byte{1, 'r', 1, 's', 1, 'o', 0, 0}); !ok {
		t.Fatal("minimal claims rejected")
	}
}

func FuzzOpen(f *testing.F) {
	s := sealer(f, testKey)
	for _, c := range []Claims{sample(), {Run: "r", Step: "s", Owner: "o"}} {
		tok, err := s.Seal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
		f.Add(tok[:len(tok)-1])
		f.Add(tok + "A")
	}
	for _, g := range []string{"", "v1.", "v1.AAAA", "v2.", "\x00", "v1.\n\n"} {
		f.Add(g)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Open(tok, now)
		switch {
		case err == nil:
			if c.Run == "" || c.Step == "" || c.Owner == "" {
				t.Fatalf("accepted %q with empty claims %+v", tok, c)
			}
		case errors.Is(err, ErrTokenInvalid), errors.Is(err, ErrTokenExpired):
		default:
			t.Fatalf("%q: unexpected error %v", tok, err)
		}
	})
}
