package server

import (
	"context"
	"log/slog"

	"github.com/vmcp-dev/vmcp/backends"
	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/engine"
)

// LiveCatalog connects to the config's backends (each is tried once) and
// returns their tools as a catalogue for compiling workflows, the status
// of every backend (unreachable ones resolve leniently, so their problems
// show here rather than as unknown tools), and the naming conflicts, if
// any. close disconnects and reaps the backends.
func LiveCatalog(ctx context.Context, cfg *dsl.Config, log *slog.Logger) (cat engine.Catalog, status []backends.BackendStatus, conflicts error, close func(), err error) {
	specs, err := backendSpecs(cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	// The backends are listed with their service credentials.
	auths, err := outgoingAuth(cfg, log)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	for i := range specs {
		specs[i].Auth = auths[specs[i].Name]
	}
	mgr, err := backends.NewManager(specs, &backends.Options{Logger: log, ClientName: "vmcp-validate"})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	mgr.Start(ctx)
	all := mgr.AllTools()
	reserved := map[string]string{}
	for _, wf := range cfg.LoadedWorkflows {
		reserved[wf.Name.Value] = "composite tool " + wf.Name.Value + " (" + wf.Pos().String() + ")"
	}
	entries, _, aggErr := backends.Aggregate(mgr.Names(), all, namingRules(cfg, reserved))
	c := &catalog{byRef: map[string]*backends.Entry{}, entries: entries}
	for _, e := range entries {
		c.byRef[e.Ref()] = e
	}
	return newEngineCatalog(c, mgr.Names(), all), mgr.Status(), aggErr, func() { _ = mgr.Close() }, nil
}
