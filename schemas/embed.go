package schemas

import (
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The schemas' $id values. The config schema refers to the workflow schema
// (for composite_tools and shared definitions) relative to its own $id.
const (
	WorkflowID = "https://raw.githubusercontent.com/vmcp-dev/vmcp/main/schemas/workflow.schema.json"
	ConfigID   = "https://raw.githubusercontent.com/vmcp-dev/vmcp/main/schemas/config.schema.json"
)

// Workflow is the JSON text of workflow.schema.json. Treat it as read-only.
//
//go:embed workflow.schema.json
var Workflow []byte

// Config is the JSON text of config.schema.json. Treat it as read-only.
//
//go:embed config.schema.json
var Config []byte

// DurationFormat is the name of the custom format the schemas use for Go
// duration strings ("500ms", "1h30m"). The pattern next to it catches typos
// in editors; the format, asserted by [CompileWorkflow] and [CompileConfig],
// also rejects values time.ParseDuration cannot represent.
const DurationFormat = "go-duration"

// CompileWorkflow compiles the workflow schema. Each call compiles afresh
// (a few milliseconds); callers keep the result, which is safe for
// concurrent use.
func CompileWorkflow() (*jsonschema.Schema, error) {
	c, err := newCompiler()
	if err != nil {
		return nil, err
	}
	return compile(c, WorkflowID)
}

// CompileConfig compiles the config schema (which includes the workflow
// schema for composite_tools).
func CompileConfig() (*jsonschema.Schema, error) {
	c, err := newCompiler()
	if err != nil {
		return nil, err
	}
	return compile(c, ConfigID)
}

// Compile compiles both schemas with one compiler, which is cheaper than
// compiling them one by one.
func Compile() (workflow, config *jsonschema.Schema, err error) {
	c, err := newCompiler()
	if err != nil {
		return nil, nil, err
	}
	if workflow, err = compile(c, WorkflowID); err != nil {
		return nil, nil, err
	}
	if config, err = compile(c, ConfigID); err != nil {
		return nil, nil, err
	}
	return workflow, config, nil
}

func newCompiler() (*jsonschema.Compiler, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.RegisterFormat(&jsonschema.Format{Name: DurationFormat, Validate: validateDuration})
	c.AssertFormat()
	for _, r := range []struct {
		id   string
		text []byte
	}{{WorkflowID, Workflow}, {ConfigID, Config}} {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.text))
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", r.id, err)
		}
		if err := c.AddResource(r.id, doc); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", r.id, err)
		}
	}
	return c, nil
}

func compile(c *jsonschema.Compiler, id string) (*jsonschema.Schema, error) {
	sch, err := c.Compile(id)
	if err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	return sch, nil
}

var durationRE = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`)

// validateDuration accepts what time.ParseDuration accepts, without a sign.
// Values of other JSON types are left to the "type" keyword.
func validateDuration(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	if !durationRE.MatchString(s) {
		return fmt.Errorf("not a duration")
	}
	if _, err := time.ParseDuration(s); err != nil {
		return err
	}
	return nil
}
