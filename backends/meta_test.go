package backends

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

// oldEncodeCall is the request encodeCall wrote with the merged _meta as
// a map (json.Marshal): the reference for the bytes.
func oldEncodeCall(id int64, tool string, args json.RawMessage, meta map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.WriteString(strconv.FormatInt(id, 10))
	b.WriteString(`,"method":"tools/call","params":{`)
	if meta != nil {
		mb, err := json.Marshal(meta)
		if err != nil {
			return nil, fmt.Errorf("failed to marshal request: %w", err)
		}
		b.WriteString(`"_meta":`)
		b.Write(mb)
		b.WriteByte(',')
	}
	nb, _ := json.Marshal(tool)
	b.WriteString(`"name":`)
	b.Write(nb)
	b.WriteString(`,"arguments":`)
	if err := json.Compact(&b, args); err != nil {
		return nil, fmt.Errorf("failed to marshal request: arguments: %w", err)
	}
	b.WriteString("}}")
	return b.Bytes(), nil
}

// refMerged is the merged _meta written out independently of callMeta:
// the caller's fields, the substituted token, and the trace keys
// replacing the caller's when trace is on.
func refMerged(fields map[string]any, tok string, trace bool, tc TraceContext) map[string]any {
	if fields == nil && !trace {
		return nil
	}
	out := map[string]any{}
	for k, v := range fields {
		out[k] = v
	}
	if tok != "" {
		out["progressToken"] = tok
	}
	if trace {
		delete(out, "traceparent")
		delete(out, "tracestate")
		delete(out, "baggage")
		if tc.HasParent {
			out["traceparent"] = string(tc.Parent[:])
		}
		if tc.State != "" {
			out["tracestate"] = tc.State
		}
		if tc.Baggage != "" {
			out["baggage"] = tc.Baggage
		}
	}
	return out
}

func testParent(flags string) (p [55]byte) {
	copy(p[:], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-"+flags)
	return p
}

// checkEncode requires encodeCall's bytes to be the reference's (the
// merged map through json.Marshal) and, when a traceparent is injected,
// the backend to decode exactly it from a valid request.
func checkEncode(t *testing.T, name string, fields map[string]any, tok string, trace bool, tc TraceContext) {
	t.Helper()
	cm := callMeta{fields: fields, token: tok, trace: trace, tc: tc}
	args := json.RawMessage(`{ "a" : [1, 2], "s":"<x>" }`)
	got, gerr := encodeCall(1<<40+7, "to<o>l\u00e9", args, &cm)
	want, werr := oldEncodeCall(1<<40+7, "to<o>l\u00e9", args, refMerged(fields, tok, trace, tc))
	if fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("%s: error %v, want %v", name, gerr, werr)
	}
	if gerr != nil {
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\ngot  %s\nwant %s", name, got, want)
	}
	var req struct {
		Params struct {
			Meta map[string]any `json:"_meta"`
		} `json:"params"`
	}
	if err := json.Unmarshal(got, &req); err != nil {
		t.Fatalf("%s: invalid request %s: %v", name, got, err)
	}
	if trace && tc.HasParent && req.Params.Meta["traceparent"] != string(tc.Parent[:]) {
		t.Fatalf("%s: backend reads traceparent %v", name, req.Params.Meta["traceparent"])
	}
	if tok != "" && req.Params.Meta["progressToken"] != tok {
		t.Fatalf("%s: backend reads progressToken %v", name, req.Params.Meta["progressToken"])
	}
}

// The _meta written into a lean tools/call is byte for byte what
// json.Marshal makes of the merged map, whatever the client's _meta was:
// none, empty, other keys (escapes, non-ASCII, invalid UTF-8, nested
// values, a null token), a client trace context to replace, with and
// without tracestate and baggage.
func TestEncodeCallMeta(t *testing.T) {
	metas := map[string]string{
		"none":             ``,
		"empty":            `{}`,
		"other":            `{"k":"v","n":1.5,"deep":{"x":[1,null,"<&>"]}}`,
		"client trace":     `{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"a=b","baggage":"u=1"}`,
		"token":            `{"progressToken":"client-tok"}`,
		"token number":     `{"progressToken":7,"traceparent":"x"}`,
		"token null":       `{"progressToken":null}`,
		"escaped keys":     `{"trace\u0070arent":"esc","a\u2028b":"\u2029","<k>":"&","z\u00e9":"\ud83d\ude00"}`,
		"whitespace":       " { \"traceparent\" : \"00-x\" ,\n\t\"k\" :\t[ 1 , 2 ] } ",
		"prefixed":         `{"io.modelcontextprotocol/related-task":{"taskId":"t"},"traceparentx":"keep"}`,
		"only traceparent": `{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`,
	}
	traces := map[string]struct {
		on bool
		tc TraceContext
	}{
		"off":          {},
		"parent":       {true, TraceContext{Parent: testParent("01"), HasParent: true}},
		"random flag":  {true, TraceContext{Parent: testParent("03"), HasParent: true}},
		"state":        {true, TraceContext{Parent: testParent("00"), HasParent: true, State: `v=1,odd="q\<&>`}},
		"no parent":    {true, TraceContext{}},
		"baggage":      {true, TraceContext{Parent: testParent("01"), HasParent: true, Baggage: "user=alice,x=%22"}},
		"baggage only": {true, TraceContext{Baggage: "user=alice"}},
	}
	for mn, raw := range metas {
		for tn, tr := range traces {
			for _, tok := range []string{"", "vmcp-42"} {
				var fields map[string]any
				if raw != "" {
					if err := json.Unmarshal([]byte(raw), &fields); err != nil {
						t.Fatalf("%s: %v", mn, err)
					}
				}
				if tok != "" && fields["progressToken"] == nil {
					continue // track substitutes only a token the caller sent
				}
				checkEncode(t, mn+"/"+tn+"/"+tok, fields, tok, tr.on, tr.tc)
			}
		}
	}
	// Invalid UTF-8 in a key and a value, and a value json cannot encode.
	checkEncode(t, "invalid utf-8", map[string]any{"k\xff": "v\xfe"}, "", true, TraceContext{Parent: testParent("01"), HasParent: true})
	checkEncode(t, "unencodable", map[string]any{"c": make(chan int)}, "", true, TraceContext{Parent: testParent("01"), HasParent: true})
}

// Random _meta objects (keys from a small alphabet that hits the trace
// and token keys, values of every JSON kind) encode as json.Marshal does.
func TestEncodeCallMetaRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := []string{"traceparent", "tracestate", "baggage", "progressToken", "a", "<b>", "z\u00e9", "trace", "progressTokenx", ""}
	values := []any{"s", "<&>", 1.0, -2.5e9, true, nil, []any{1.0, "x"}, map[string]any{"q": "\u2028"}}
	for i := 0; i < 3000; i++ {
		var fields map[string]any
		if r.IntN(5) > 0 {
			fields = map[string]any{}
			for n := r.IntN(5); n > 0; n-- {
				fields[keys[r.IntN(len(keys))]] = values[r.IntN(len(values))]
			}
		}
		tok := ""
		if fields["progressToken"] != nil && r.IntN(2) == 0 {
			tok = "vmcp-" + strconv.Itoa(i)
		}
		var tc TraceContext
		on := r.IntN(4) > 0
		if on && r.IntN(6) > 0 {
			tc.Parent, tc.HasParent = testParent([]string{"00", "01", "02", "03"}[r.IntN(4)]), true
		}
		if on && r.IntN(3) == 0 {
			tc.State = "v=" + strconv.Itoa(i)
		}
		if on && r.IntN(5) == 0 {
			tc.Baggage = "b=" + strconv.Itoa(i)
		}
		checkEncode(t, fmt.Sprintf("random %d %v", i, fields), fields, tok, on, tc)
	}
}

// FuzzEncodeCallMeta: any client _meta object (decoded as the server
// decodes it) and trace state encode as json.Marshal does, into a valid
// request carrying the injected traceparent.
func FuzzEncodeCallMeta(f *testing.F) {
	f.Add(`{}`, "", false)
	f.Add(`{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","k":1}`, "a=b", true)
	f.Add(`{"progressToken":"t","trace\u0070arent":"x"}`, `x="<>"`, true)
	f.Fuzz(func(t *testing.T, meta, state string, tok bool) {
		var fields map[string]any
		if json.Unmarshal([]byte(meta), &fields) != nil {
			return
		}
		token := ""
		if tok && fields["progressToken"] != nil {
			token = "vmcp-1"
		}
		checkEncode(t, meta, fields, token, true, TraceContext{Parent: testParent("01"), HasParent: true, State: state})
	})
}
