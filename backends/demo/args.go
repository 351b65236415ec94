package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Handlers check their arguments with the helpers below, covering every
// constraint of their input schema, and answer with one kind of message:
// "invalid arguments: <what>; <what>". (mcp-go's own input-schema
// validation is off: its messages read like "<root>: &{Missing:[id]}".)
// A test checks that handlers and schemas agree on valid and invalid
// arguments.

// Patterns of the input schemas.
var (
	incidentIDPattern = regexp.MustCompile(`^INC-[0-9]+$`)
	durationPattern   = regexp.MustCompile(`^[0-9]+(ms|s|m|h)$`)
	versionPattern    = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+$`)
	channelPattern    = regexp.MustCompile(`^#[a-z0-9_-]+$`)
)

// decodeArgs decodes a call's arguments into dst, a pointer to a struct
// whose json tags are the tool's properties. Unknown properties, nulls and
// values of the wrong JSON type are errors.
func decodeArgs(raw json.RawMessage, dst any) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return argError(err)
	}
	var nulls []string
	for k, v := range top {
		if string(bytes.TrimSpace(v)) == "null" {
			nulls = append(nulls, fmt.Sprintf("%s: expected a value, got null", k))
		}
	}
	if len(nulls) > 0 {
		slices.Sort(nulls)
		return errors.New("invalid arguments: " + strings.Join(nulls, "; "))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return argError(err)
	}
	return nil
}

func argError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("invalid arguments: expected an object, got %s", te.Value)
		}
		return fmt.Errorf("invalid arguments: %s: expected %s, got %s", te.Field, jsonTypeName(te.Type), te.Value)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("invalid arguments: unknown argument %s", f)
	}
	return fmt.Errorf("invalid arguments: %v", err)
}

// jsonTypeName is the JSON Schema type name of a Go type.
func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return "object"
}

// intArg is an optional integer argument. Unlike int it accepts any
// integral JSON number (5.0, 5e0), as JSON Schema's "integer" does.
type intArg struct {
	v   int
	set bool
}

func (a *intArg) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		what := "number " + string(b)
		if err != nil {
			what = jsonKind(b)
		}
		return &json.UnmarshalTypeError{Value: what, Type: reflect.TypeFor[int]()}
	}
	a.v, a.set = int(f), true
	return nil
}

// jsonKind names the JSON type of a value's text.
func jsonKind(b []byte) string {
	switch b = bytes.TrimSpace(b); {
	case len(b) == 0:
		return "nothing"
	case b[0] == '"':
		return "string"
	case b[0] == '{':
		return "object"
	case b[0] == '[':
		return "array"
	case b[0] == 't' || b[0] == 'f':
		return "bool"
	}
	return "number"
}

// checker collects argument problems.
type checker struct{ problems []string }

func (c *checker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// need reports a missing (or empty) required string.
func (c *checker) need(name, v string) bool {
	if v == "" {
		c.addf("%s is required", name)
		return false
	}
	return true
}

// match checks a non-empty string against a pattern.
func (c *checker) match(name, v string, re *regexp.Regexp, example string) {
	if v != "" && !re.MatchString(v) {
		c.addf("%s: %q does not look like %s", name, v, example)
	}
}

// oneOf checks a non-empty string against an enumeration.
func (c *checker) oneOf(name, v string, allowed ...string) {
	if v != "" && !slices.Contains(allowed, v) {
		c.addf("%s: %q is not one of %s", name, v, strings.Join(allowed, ", "))
	}
}

// maxLen checks a string's length in characters.
func (c *checker) maxLen(name, v string, n int) {
	if l := utf8.RuneCountInString(v); l > n {
		c.addf("%s: %d characters, at most %d allowed", name, l, n)
	}
}

// between checks an optional integer and returns it, or def when absent.
func (c *checker) between(name string, v intArg, lo, hi, def int) int {
	if !v.set {
		return def
	}
	if v.v < lo || v.v > hi {
		c.addf("%s: %d is not between %d and %d", name, v.v, lo, hi)
		return def
	}
	return v.v
}

// err is nil when nothing was reported.
func (c *checker) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return errors.New("invalid arguments: " + strings.Join(c.problems, "; "))
}

// maxWindow is how far back the demo's logs and metrics go.
const maxWindow = 30 * 24 * time.Hour

// window checks a duration argument ("15m", "1h", …) and returns it, capped
// at maxWindow.
func (c *checker) window(name, v string) time.Duration {
	if v == "" {
		return 0
	}
	if !durationPattern.MatchString(v) {
		c.addf("%s: %q is not a duration such as 15m, 1h or 24h", name, v)
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d > maxWindow {
		return maxWindow // too large to represent: all there is
	}
	if d <= 0 {
		c.addf("%s: the window must be longer than zero", name)
	}
	return d
}
