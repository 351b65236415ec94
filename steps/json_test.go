package steps

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    any
		wantErr string
	}{
		{name: "integer", in: `42`, want: int64(42)},
		{name: "negative integer", in: `-7`, want: int64(-7)},
		{name: "int64 max", in: `9223372036854775807`, want: int64(math.MaxInt64)},
		{name: "int64 min", in: `-9223372036854775808`, want: int64(math.MinInt64)},
		{name: "beyond int64 is float", in: `9223372036854775808`, want: float64(9223372036854775808)},
		{name: "fraction", in: `4.5`, want: 4.5},
		{name: "written as float stays float", in: `1.0`, want: 1.0},
		{name: "exponent is float", in: `1e3`, want: 1000.0},
		{name: "string bool null", in: `["a", true, null]`, want: []any{"a", true, nil}},
		{name: "nested numbers converted", in: `{"a": {"b": [1, 2.5, {"c": 3}]}}`,
			want: map[string]any{"a": map[string]any{"b": []any{int64(1), 2.5, map[string]any{"c": int64(3)}}}}},
		{name: "surrounding white space", in: " \n {\"a\": 1} \t\n", want: map[string]any{"a": int64(1)}},
		{name: "trailing value", in: `{"a": 1} {"b": 2}`, wantErr: "invalid JSON: unexpected data after the value"},
		{name: "trailing garbage", in: `1 x`, wantErr: "invalid JSON: unexpected data after the value"},
		{name: "trailing bracket", in: `[1]]`, wantErr: "invalid JSON: unexpected data after the value"},
		{name: "empty", in: ``, wantErr: "invalid JSON: empty input"},
		{name: "only space", in: `   `, wantErr: "invalid JSON: empty input"},
		{name: "syntax error", in: `{"a": }`, wantErr: "invalid JSON: invalid character '}'"},
		{name: "truncated", in: `{"a": 1`, wantErr: "invalid JSON: unexpected EOF"},
		{name: "number out of range", in: `1e400`, wantErr: "invalid JSON: number 1e400 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeJSON([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeJSON(%q) error = %v, want prefix %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeJSON(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeJSON(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestEncodeJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      any
		want    string
		wantErr bool
	}{
		{name: "no HTML escaping", in: "<a & b>", want: `"<a & b>"`},
		{name: "maps sorted", in: map[string]any{"b": int64(1), "a": []any{true, nil}}, want: `{"a":[true,null],"b":1}`},
		{name: "int64", in: int64(-9223372036854775808), want: `-9223372036854775808`},
		{name: "integral float", in: 3.0, want: `3`},
		{name: "large integral float without exponent", in: 1e20, want: `100000000000000000000`},
		{name: "float at 1e21 uses exponent", in: 1e21, want: `1e+21`},
		{name: "fraction", in: 4.5, want: `4.5`},
		{name: "small fraction", in: 0.000001, want: `0.000001`},
		{name: "tiny fraction", in: 1e-7, want: `1e-7`},
		{name: "null", in: nil, want: `null`},
		{name: "unicode kept", in: "héllo ✓", want: `"héllo ✓"`},
		{name: "NaN", in: math.NaN(), wantErr: true},
		{name: "Inf inside", in: []any{math.Inf(1)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeJSON(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("EncodeJSON(%v) = %s, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("EncodeJSON(%v): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("EncodeJSON(%v) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, in := range []string{
		`{"a":[1,2.5,"x",true,null],"b":{"c":-7}}`,
		`[9223372036854775807,1e+21,0.1]`,
		`"<&>"`,
	} {
		v, err := DecodeJSON([]byte(in))
		if err != nil {
			t.Fatalf("DecodeJSON(%s): %v", in, err)
		}
		out, err := EncodeJSON(v)
		if err != nil {
			t.Fatalf("EncodeJSON: %v", err)
		}
		if string(out) != in {
			t.Errorf("round trip of %s = %s", in, out)
		}
	}
}

func TestTypeName(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"x", "string"},
		{int64(1), "integer"},
		{3, "integer"},
		{1.0, "number"},
		{4.5, "number"},
		{true, "boolean"},
		{nil, "null"},
		{[]any{}, "array"},
		{map[string]any{}, "object"},
		{json.Number("12"), "integer"},
		{json.Number("1.5"), "number"},
		{[]string{"a"}, "[]string"},
	}
	for _, tt := range tests {
		if got := TypeName(tt.in); got != tt.want {
			t.Errorf("TypeName(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsJSONNumber(t *testing.T) {
	for s, want := range map[string]bool{
		"0": true, "-0": true, "42": true, "-7": true, "4.5": true, "1e3": true, "1E+3": true, "2.5e-3": true,
		"": false, "-": false, "+1": false, "01": false, "1.": false, ".5": false, "1e": false, "1e+": false,
		"NaN": false, "Inf": false, "0x10": false, " 1": false, "1 ": false, "1_000": false, "abc": false,
	} {
		if got := isJSONNumber(s); got != want {
			t.Errorf("isJSONNumber(%q) = %v, want %v", s, got, want)
		}
	}
}
