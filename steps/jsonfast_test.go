package steps

import (
	"reflect"
	"strings"
	"testing"
)

var decodeFastSeeds = []string{
	`42`, `-7`, `-0`, `-0.0`, `0`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `1E-2`, `+1`,
	`9223372036854775807`, `-9223372036854775808`, `9223372036854775808`, `1e400`, `4.5`, `1.0`,
	`true`, `false`, `null`, `tru`, `nul`, `"a"`, `""`, `"\u00e9"`, `"\ud83d\ude00"`, `"a\nb"`,
	`"tab\there \"q\" \\ \/ \b\f\r"`, `"\x"`, "\"raw\ttab\"", "\"\xff\"", `"é ü 日本"`, `"unterminated`,
	`[]`, `{}`, `[ ]`, `{ }`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `[1 2]`, `{"a":1}{"b":2}`, `1 x`,
	` {"a": {"b": [1, 2.5, {"c": 3}]}} `, `{"a":1,"a":2}`, `{"structured":{"n":1,"service":"api"}}`,
	`[{"type":"text","text":"{\"n\":1,\"service\":\"api\"}"}]`, ``, `   `, `[[[[[[[[[[]]]]]]]]]]`,
	strings.Repeat("[", 600) + strings.Repeat("]", 600), `{"k\"ey":"v"}`, "{\"\xc3\":1}",
}

// TestDecodeFastAgrees: whatever the fast path accepts, encoding/json's
// path decodes to the same value; what it gives up on goes that path.
func TestDecodeFastAgrees(t *testing.T) {
	accepted := 0
	for _, in := range decodeFastSeeds {
		if checkDecodeFast(t, []byte(in)) {
			accepted++
		}
	}
	if accepted < 20 {
		t.Errorf("the fast path accepted only %d of the %d seeds", accepted, len(decodeFastSeeds))
	}
}

func checkDecodeFast(t *testing.T, in []byte) bool {
	t.Helper()
	fast, ok := decodeFast(in)
	slow, err := decodeSlow(in)
	if !ok {
		got, gotErr := DecodeJSON(in)
		if (err == nil) != (gotErr == nil) || (err != nil && err.Error() != gotErr.Error()) || !reflect.DeepEqual(got, slow) {
			t.Errorf("DecodeJSON(%q) = %v, %v; encoding/json's path: %v, %v", in, got, gotErr, slow, err)
		}
		return false
	}
	if err != nil {
		t.Errorf("fast path accepted %q, which encoding/json rejects: %v", in, err)
		return true
	}
	if !reflect.DeepEqual(slow, fast) {
		t.Errorf("fast path on %q gives %#v; encoding/json's path: %#v", in, fast, slow)
	}
	return true
}

func FuzzDecodeFast(f *testing.F) {
	for _, s := range decodeFastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkDecodeFast(t, in) })
}

func BenchmarkDecodeJSON(b *testing.B) {
	in := []byte(`{"n":1,"service":"api","tags":["a","b"],"rate":0.05,"ok":true,"nested":{"x":null}}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeJSON(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeSlow(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}
