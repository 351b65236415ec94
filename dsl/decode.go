package dsl

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Decoding from yaml.Node into the typed AST.
//
// The loader validates a document against its JSON Schema before decoding,
// so decoding is lenient: a value of the wrong kind decodes to the zero
// value with Set false (or a nil pointer, or no element), and never fails.
// Every wrapper keeps the node it came from, so later stages can blame a
// position. Aliases are resolved (positions then point at the anchored
// value). Explicit nulls (`key:` or `key: ~`) keep their node with Set
// false.

// resolve follows alias nodes (a bounded number of hops).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 64; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return resolve(n.Content[0])
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// UnmarshalYAML keeps the node; any non-null scalar sets Value to its text
// (so `port: 8080` in a string map reads "8080"). Other kinds leave Set
// false.
func (s *String) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*s = String{Node: n}
	if n != nil && n.Kind == yaml.ScalarNode && !isNull(n) {
		s.Value, s.Set = n.Value, true
	}
	return nil
}

// UnmarshalYAML accepts integers, and floats with an integral value.
func (i *Int) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*i = Int{Node: n}
	if n == nil || n.Kind != yaml.ScalarNode {
		return nil
	}
	switch n.ShortTag() {
	case "!!int":
		if v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, strconv.IntSize); err == nil {
			i.Value, i.Set = int(v), true
			return nil
		}
		var v int
		if n.Decode(&v) == nil {
			i.Value, i.Set = v, true
		}
	case "!!float":
		var f float64
		if n.Decode(&f) == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
			i.Value, i.Set = int(f), true
		}
	}
	return nil
}

// UnmarshalYAML accepts integers and finite floats.
func (f *Float) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*f = Float{Node: n}
	if n == nil || n.Kind != yaml.ScalarNode {
		return nil
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		var v float64
		if n.Decode(&v) == nil && !math.IsInf(v, 0) && !math.IsNaN(v) {
			f.Value, f.Set = v, true
		}
	}
	return nil
}

// UnmarshalYAML accepts true and false.
func (b *Bool) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*b = Bool{Node: n}
	if n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var v bool
		if n.Decode(&v) == nil {
			b.Value, b.Set = v, true
		}
	}
	return nil
}

// UnmarshalYAML accepts a Go duration string ("500ms", "1h30m").
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*d = Duration{Node: n}
	if n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		if v, err := time.ParseDuration(n.Value); err == nil && v >= 0 {
			d.Value, d.Set = v, true
		}
	}
	return nil
}

// UnmarshalYAML keeps the node as is (aliases resolved at the top only;
// use NodeValue to convert it).
func (v *Value) UnmarshalYAML(n *yaml.Node) error {
	*v = Value{Node: resolve(n)}
	return nil
}

// UnmarshalYAML accepts a bare action ("abort") or the object form
// {action, retry_count, retry_delay}.
func (o *OnError) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*o = OnError{Node: n}
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return o.Action.UnmarshalYAML(n)
	}
	decodeStruct(n, reflect.ValueOf(o).Elem())
	return nil
}

// UnmarshalYAML accepts a bare action ("skip_remaining") or {action: …}.
func (a *Action) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*a = Action{Node: n}
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return a.Action.UnmarshalYAML(n)
	}
	decodeStruct(n, reflect.ValueOf(a).Elem())
	return nil
}

// UnmarshalYAML decodes a workflow leniently, keeping nodes. Prefer
// LoadWorkflow, which also validates.
func (w *Workflow) UnmarshalYAML(n *yaml.Node) error {
	*w = Workflow{}
	decodeStruct(resolve(n), reflect.ValueOf(w).Elem())
	return nil
}

// UnmarshalYAML decodes a step leniently, keeping nodes.
func (s *Step) UnmarshalYAML(n *yaml.Node) error {
	*s = Step{}
	decodeStruct(resolve(n), reflect.ValueOf(s).Elem())
	return nil
}

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	nodePtrType     = reflect.TypeFor[*yaml.Node]()
)

// decodeValue decodes n into v (addressable). Wrong kinds leave v as is.
func decodeValue(n *yaml.Node, v reflect.Value) {
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		_ = v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n)
		return
	}
	n = resolve(n)
	if isNull(n) {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Kind != yaml.MappingNode && v.Type().Elem().Kind() == reflect.Struct &&
			!reflect.PointerTo(v.Type().Elem()).Implements(unmarshalerType) {
			return // a struct needs a mapping; the schema reported it
		}
		p := reflect.New(v.Type().Elem())
		decodeValue(n, p.Elem())
		v.Set(p)
	case reflect.Struct:
		if n.Kind == yaml.MappingNode {
			decodeStruct(n, v)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		s := reflect.MakeSlice(v.Type(), 0, len(n.Content))
		elem := v.Type().Elem()
		for _, c := range n.Content {
			// Skip items that cannot become a struct, rather than keeping a
			// nil *Step the compiler would trip over.
			if rc := resolve(c); elem.Kind() == reflect.Pointer && (rc == nil || rc.Kind != yaml.MappingNode) {
				continue
			}
			e := reflect.New(elem).Elem()
			decodeValue(c, e)
			s = reflect.Append(s, e)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode || v.Type().Key().Kind() != reflect.String {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		elem := v.Type().Elem()
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := resolve(n.Content[i])
			if k == nil || k.Kind != yaml.ScalarNode {
				continue
			}
			if rc := resolve(n.Content[i+1]); elem.Kind() == reflect.Pointer && (rc == nil || rc.Kind != yaml.MappingNode) &&
				!elem.Implements(unmarshalerType) {
				continue
			}
			e := reflect.New(elem).Elem()
			decodeValue(n.Content[i+1], e)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind == yaml.ScalarNode {
			v.SetString(n.Value)
		}
	case reflect.Bool:
		var b bool
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" && n.Decode(&b) == nil {
			v.SetBool(b)
		}
	}
}

// decodeStruct fills the fields of struct v from mapping n by yaml tag; a
// field named Node of type *yaml.Node receives n itself. For duplicate keys
// the last one wins, as in NodeValue.
func decodeStruct(n *yaml.Node, v reflect.Value) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	t := v.Type()
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := yamlName(f)
		if tag == "-" {
			if f.Name == "Node" && f.Type == nodePtrType {
				v.Field(i).Set(reflect.ValueOf(n))
			}
			continue
		}
		fields[tag] = i
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			continue
		}
		if fi, ok := fields[k.Value]; ok {
			f := v.Field(fi)
			f.Set(reflect.Zero(f.Type()))
			decodeValue(n.Content[i+1], f)
		}
	}
}

// yamlName returns the key a struct field is decoded from.
func yamlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "" {
		return strings.ToLower(f.Name)
	}
	return tag
}
