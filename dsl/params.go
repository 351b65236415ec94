package dsl

import "fmt"

// InputSchema returns the tool's inputSchema in the JSON data model, from
// `parameters`: as written when it is a JSON Schema (type: object); the
// ToolHive-proposal form, a mapping of parameter name to property schema,
// wrapped as {type: object, properties: …} (no parameter is required in that
// form); or an empty object schema when there are no parameters.
func (w *Workflow) InputSchema() (map[string]any, error) {
	n := resolve(w.Parameters.Node)
	if n == nil || isNull(n) {
		return map[string]any{"type": "object", "properties": map[string]any{}}, nil
	}
	v, err := NodeValue(n)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: parameters must be a mapping", w.Src.NodePos(n))
	}
	if _, isSchema := m["type"].(string); isSchema {
		return m, nil
	}
	return map[string]any{"type": "object", "properties": m}, nil
}
