package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// askForm runs the terminal form on scripted input.
func askForm(t *testing.T, schema, input string) (*formAnswer, string, error) {
	t.Helper()
	var out strings.Builder
	f := newForm(strings.NewReader(input), &out)
	ans, err := f.ask("Deploy it?", json.RawMessage(schema))
	return ans, out.String(), err
}

const (
	boolSchema  = `{"type":"object","properties":{"ok":{"type":"boolean","title":"Go ahead"}},"required":["ok"]}`
	enumSchema  = `{"type":"object","properties":{"env":{"type":"string","enum":["staging","production"],"default":"staging"}},"required":["env"]}`
	pageSchema  = `{"type":"object","properties":{"note":{"type":"string","title":"Note for the page"},"page":{"type":"boolean","title":"Page the on-call engineer","default":true}},"required":["page"]}`
	countSchema = `{"type":"object","properties":{"count":{"type":"integer","minimum":1,"maximum":10}},"required":["count"]}`
)

func TestFormAnswers(t *testing.T) {
	tests := []struct {
		name    string
		schema  string
		input   string
		want    map[string]any
		wantOut []string // substrings of what the form writes
	}{
		{"boolean y", boolSchema, "y\n", map[string]any{"ok": true}, []string{"Deploy it?", "Go ahead (ok), required", "yes/no: y"}},
		{"boolean n", boolSchema, "n\n", map[string]any{"ok": false}, nil},
		{"boolean yes", boolSchema, "Yes\n", map[string]any{"ok": true}, nil},
		{"boolean no", boolSchema, "no\n", map[string]any{"ok": false}, nil},
		{"boolean true", boolSchema, "TRUE\n", map[string]any{"ok": true}, nil},
		{"boolean false", boolSchema, "false\n", map[string]any{"ok": false}, nil},
		{"boolean invalid then valid", boolSchema, "maybe\ny\n", map[string]any{"ok": true},
			[]string{`! "maybe" is not yes or no (y, n, yes, no, true, false)`}},
		{"required empty rejected", boolSchema, "\n\nn\n", map[string]any{"ok": false}, []string{"! a value is required"}},
		{"enum by number", enumSchema, "2\n", map[string]any{"env": "production"},
			[]string{"1) staging", "2) production", "choose 1-2 [staging]"}},
		{"enum by value", enumSchema, "production\n", map[string]any{"env": "production"}, nil},
		{"enum by value, any case", enumSchema, "PRODUCTION\n", map[string]any{"env": "production"}, nil},
		{"enum default on empty line", enumSchema, "\n", map[string]any{"env": "staging"}, nil},
		{"enum invalid then valid", enumSchema, "3\nprod\n1\n", map[string]any{"env": "staging"},
			[]string{`! "3" is not one of the choices: type 1-2 or one of staging, production`, `! "prod" is not one of the choices`}},
		{"enum with titles (oneOf)", `{"type":"object","properties":{"sev":{"type":"string","oneOf":[{"const":"s1","title":"Critical"},{"const":"s2","title":"Minor"}]}}}`,
			"minor\n", map[string]any{"sev": "s2"}, []string{"1) Critical  [s1]", "2) Minor  [s2]"}},
		{"enum with enumNames", `{"type":"object","properties":{"sev":{"type":"string","enum":["s1","s2"],"enumNames":["Critical","Minor"]}}}`,
			"1\n", map[string]any{"sev": "s1"}, []string{"1) Critical  [s1]"}},
		{"numeric enum: a value wins over a position", `{"type":"object","properties":{"n":{"type":"integer","enum":[5,1,2]}}}`,
			"1\n", map[string]any{"n": 1.0}, nil},
		{"numeric enum by position", `{"type":"object","properties":{"n":{"type":"integer","enum":[5,10]}}}`,
			"2\n", map[string]any{"n": 10.0}, nil},
		{"integer", countSchema, "7\n", map[string]any{"count": int64(7)}, []string{"integer ≥ 1 ≤ 10:"}},
		{"integer invalid then valid", countSchema, "3.5\nten\n0\n11\n4\n", map[string]any{"count": int64(4)},
			[]string{`! "3.5" is not an integer`, `! "ten" is not an integer`, "! must be at least 1", "! must be at most 10"}},
		{"number", `{"type":"object","properties":{"rate":{"type":"number","exclusiveMinimum":0}},"required":["rate"]}`,
			"abc\n0\n0.25\n", map[string]any{"rate": 0.25}, []string{`! "abc" is not a number`, "! must be more than 0"}},
		{"defaults on empty lines", pageSchema, "\n\n", map[string]any{"page": true}, []string{"yes/no [yes]:", "text, optional:"}},
		{"required fields first", pageSchema, "n\na note\n", map[string]any{"page": false, "note": "a note"}, nil},
		{"string default", `{"type":"object","properties":{"who":{"type":"string","default":"me"}}}`, "\n", map[string]any{"who": "me"}, []string{"text [me]"}},
		{"optional empty left out", `{"type":"object","properties":{"who":{"type":"string"}}}`, "\n", map[string]any{}, nil},
		{"string limits", `{"type":"object","properties":{"c":{"type":"string","minLength":2,"maxLength":3}}}`,
			"a\nabcd\nabc\n", map[string]any{"c": "abc"}, []string{"! must be at least 2 characters", "! must be at most 3 characters"}},
		{"email", `{"type":"object","properties":{"e":{"type":"string","format":"email"}},"required":["e"]}`,
			"bob\nbob@example.com\n", map[string]any{"e": "bob@example.com"}, []string{`! "bob" is not an email address`, "text (email)"}},
		{"date", `{"type":"object","properties":{"d":{"type":"string","format":"date"}}}`,
			"tomorrow\n2026-01-02\n", map[string]any{"d": "2026-01-02"}, []string{"is not a date (YYYY-MM-DD)"}},
		{"multi-select", `{"type":"object","properties":{"envs":{"type":"array","items":{"type":"string","enum":["dev","staging","prod"]},"minItems":1}},"required":["envs"]}`,
			",\n1, prod, 1\n", map[string]any{"envs": []any{"dev", "prod"}}, []string{"choose any of 1-3, comma-separated", "! choose at least 1"}},
		{"nullable type", `{"type":"object","properties":{"n":{"type":["integer","null"]}}}`, "5\n", map[string]any{"n": int64(5)}, nil},
		{"unknown command, then !! for a literal !", `{"type":"object","properties":{"s":{"type":"string"}}}`,
			"!what\n!!bang\n", map[string]any{"s": "!bang"}, []string{"! unknown command !what"}},
		{"Windows line ends", boolSchema, "maybe\r\nyes\r\n", map[string]any{"ok": true}, nil},
		{"last line without newline", boolSchema, "y", map[string]any{"ok": true}, nil},
		{"input ends after the required answers: the rest keep their defaults", pageSchema, "n\n", map[string]any{"page": false},
			[]string{"(input ended: the remaining fields keep their defaults)"}},
		{"no fields: a confirmation", `{"type":"object","properties":{}}`, "\n", map[string]any{}, []string{"press Enter to accept"}},
		{"no schema: a confirmation", ``, "\n", map[string]any{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans, out, err := askForm(t, tt.schema, tt.input)
			if err != nil {
				t.Fatalf("ask: %v\noutput:\n%s", err, out)
			}
			if ans.Action != "accept" || !reflect.DeepEqual(ans.Content, tt.want) {
				t.Fatalf("got %s %#v, want accept %#v\noutput:\n%s", ans.Action, ans.Content, tt.want, out)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestFormRefusals(t *testing.T) {
	tests := []struct {
		name, schema, input, want string
	}{
		{"decline at the first prompt", pageSchema, "!decline\n", "decline"},
		{"cancel at a later prompt", pageSchema, "y\n!cancel\n", "cancel"},
		{"decline after an invalid answer", countSchema, "0\n!DECLINE\n", "decline"},
		{"cancel a confirmation", `{"type":"object"}`, "!cancel\n", "cancel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans, out, err := askForm(t, tt.schema, tt.input)
			if err != nil {
				t.Fatalf("ask: %v\n%s", err, out)
			}
			if ans.Action != tt.want || ans.Content != nil {
				t.Fatalf("got %+v, want action %s without content", ans, tt.want)
			}
		})
	}
}

func TestFormInputEnds(t *testing.T) {
	for _, tt := range []struct{ name, schema, input string }{
		{"nothing typed", pageSchema, ""},
		{"nothing typed, all optional", `{"type":"object","properties":{"a":{"type":"string"}}}`, ""},
		{"ends before a required field", `{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"required":["a","b"]}`, "x\n"},
		{"ends while re-asking", boolSchema, "maybe\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ans, _, err := askForm(t, tt.schema, tt.input)
			if !errors.Is(err, errNoInput) {
				t.Fatalf("got %+v, %v; want errNoInput", ans, err)
			}
		})
	}
}

func TestFormBadSchema(t *testing.T) {
	if _, _, err := askForm(t, `{"type":"object","properties":[1]}`, "y\n"); err == nil {
		t.Fatal("a schema whose properties are not an object was accepted")
	}
}

// Two questions in a row read from one input without losing buffered
// lines.
func TestFormSharesInput(t *testing.T) {
	var out strings.Builder
	f := newForm(bufio.NewReader(strings.NewReader("y\nn\n")), &out)
	for _, want := range []bool{true, false} {
		ans, err := f.ask("?", json.RawMessage(boolSchema))
		if err != nil || ans.Content["ok"] != want {
			t.Fatalf("got %+v, %v; want ok=%v", ans, err, want)
		}
	}
}

func TestAPIBase(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:4483/mcp":       "http://127.0.0.1:4483",
		"http://127.0.0.1:4483/mcp/":      "http://127.0.0.1:4483",
		"https://gw.example.com/vmcp/mcp": "https://gw.example.com/vmcp",
		"http://h:1/other":                "http://h:1/other",
		"http://h:1/mcp?x=1#frag":         "http://h:1",
	} {
		if got := apiBase(in); got != want {
			t.Errorf("apiBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	for _, tt := range []struct {
		p    map[string]any
		want string
	}{
		{map[string]any{"progress": 3.0, "total": 8.0, "message": "step logs completed"}, "[3/8] step logs completed"},
		{map[string]any{"progress": 0.5}, "[0.5]"},
	} {
		if got := progressLine(tt.p); got != tt.want {
			t.Errorf("progressLine(%v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestHintSummary(t *testing.T) {
	tr, fa := true, false
	for _, tt := range []struct {
		ro, destr, idem, open *bool
		want                  string
		guessed               bool
	}{
		{ro: &tr, open: &fa, want: "ro"},
		{ro: &tr, want: "ro,open-world?", guessed: true},
		{destr: &fa, idem: &tr, open: &tr, want: "idempotent,open-world"},
		{want: "destructive?,open-world?", guessed: true},
		{destr: &tr, open: &fa, want: "destructive"},
		{destr: &fa, open: &fa, want: "-"},
	} {
		var s toolSummary
		s.Annotations.ReadOnlyHint, s.Annotations.DestructiveHint, s.Annotations.IdempotentHint, s.Annotations.OpenWorldHint = tt.ro, tt.destr, tt.idem, tt.open
		got, guessed := hintSummary(&s)
		if got != tt.want || guessed != tt.guessed {
			t.Errorf("got %q %v, want %q %v", got, guessed, tt.want, tt.guessed)
		}
	}
}
