package main

import (
	"github.com/vmcp-dev/vmcp/authz"
	"github.com/vmcp-dev/vmcp/dsl"
)

// config loads a config file; the loader also loads the workflow files its
// `workflows` entries name (relative to the config file) and its inline
// `composite_tools`, reporting their problems with the config's. Each of
// them is then compiled like a workflow given on the command line.
func (l *loader) config(path string) (*dsl.Config, error) {
	var (
		cfg   *dsl.Config
		diags dsl.Diagnostics
	)
	if l.dl != nil {
		cfg, diags = l.dl.LoadConfigFile(path)
	} else {
		cfg, diags = dsl.LoadConfigFile(path)
	}
	l.diags.Append(diags)
	if cfg == nil {
		return nil, nil
	}
	// Authorization policies compile with the config (file:line:col).
	_, pds := authz.Compile(cfg)
	l.diags.Append(pds)
	l.fromConfig = true
	defer func() { l.fromConfig = false }()
	for _, wf := range cfg.LoadedWorkflows {
		l.add(wf, nil)
	}
	return cfg, nil
}
