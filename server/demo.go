package server

import (
	"io/fs"
	"path"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/workflows"
)

// demoConfig is the embedded demo (SPEC §7): the six demo backends in
// process, and the workflows shipped in workflows/.
const demoConfig = `name: vmcp-demo
listen: 127.0.0.1:4483
backends:
  - {name: incidents, builtin: incidents}
  - {name: logs, builtin: logs}
  - {name: metrics, builtin: metrics}
  - {name: deploys, builtin: deploys}
  - {name: chat, builtin: chat}
  - {name: tickets, builtin: tickets}
`

// DemoConfig returns the embedded demo's config with its workflows loaded.
func DemoConfig(l *dsl.Loader) (*dsl.Config, dsl.Diagnostics) {
	load := dsl.LoadConfig
	loadWF := dsl.LoadWorkflow
	if l != nil {
		load, loadWF = l.LoadConfig, l.LoadWorkflow
	}
	cfg, ds := load("embedded demo config", []byte(demoConfig), func(string) (string, bool) { return "", false })
	if cfg == nil {
		return nil, ds
	}
	names, err := fs.Glob(workflows.FS, "*.yaml")
	if err != nil {
		ds = append(ds, dsl.Diagnostic{Msg: err.Error()})
		return cfg, ds
	}
	for _, name := range names {
		data, err := fs.ReadFile(workflows.FS, name)
		if err != nil {
			ds = append(ds, dsl.Diagnostic{Msg: err.Error()})
			continue
		}
		wf, wds := loadWF(path.Join("workflows", name), data)
		ds = append(ds, wds...)
		if wf != nil && len(wds) == 0 {
			cfg.LoadedWorkflows = append(cfg.LoadedWorkflows, wf)
		}
	}
	return cfg, ds
}
