package steps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// DecodeJSON decodes one JSON value into the data model used everywhere in
// vmcp: map[string]any, []any, string, bool, nil, int64 for numbers written
// as integers that fit in 64 bits, float64 for every other number (1.0, 1e3
// and 2^64 included). Anything after the value other than white space is an
// error.
func DecodeJSON(data []byte) (any, error) {
	if v, ok := decodeFast(data); ok {
		return v, nil
	}
	return decodeSlow(data)
}

// decodeSlow is DecodeJSON with encoding/json: every input decodeFast
// gives up on, and the reference it is tested against.
func decodeSlow(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("invalid JSON: empty input")
		}
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		off := len(data) - len(bytes.TrimLeft(data[end:], " \t\r\n"))
		return nil, fmt.Errorf("invalid JSON: unexpected data after the value at offset %d", off)
	}
	return fromJSONNumbers(v)
}

// fromJSONNumbers replaces json.Number in place (the decoder's maps and slices
// are ours) and returns the converted value.
func fromJSONNumbers(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		return jsonNumberValue(string(v))
	case map[string]any:
		for k, e := range v {
			c, err := fromJSONNumbers(e)
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
	case []any:
		for i, e := range v {
			c, err := fromJSONNumbers(e)
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
	}
	return v, nil
}

// jsonNumberValue converts JSON number text: integer syntax that fits → int64,
// anything else → float64.
func jsonNumberValue(s string) (any, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		// Out of float64 range (1e400): JSON cannot carry it faithfully.
		return nil, fmt.Errorf("invalid JSON: number %s is out of range", s)
	}
	return f, nil
}

// EncodeJSON encodes a data-model value as compact JSON: like json.Marshal
// (map keys sorted, float64 values that are integral and below 1e21 written
// without an exponent) but without HTML escaping of <, > and &.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return b[:len(b)-1], nil // Encode appends a newline
}

// TypeName names the JSON type of a data-model value for messages:
// "string", "integer", "number", "boolean", "null", "array" or "object".
// float64 is always "number", even when integral. Values outside the data
// model are named by their Go type.
func TypeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, int, int32, int16, int8, uint, uint64, uint32, uint16, uint8:
		return "integer"
	case float64, float32:
		return "number"
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			return "number"
		}
		return "integer"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// isJSONNumber reports whether s is a JSON number literal (no white space,
// no leading +, no NaN/Inf/hex).
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i == len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	return i == len(s)
}
