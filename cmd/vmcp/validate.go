package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/vmcp-dev/vmcp/dsl"
	"github.com/vmcp-dev/vmcp/server"
)

func newValidateCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		configFile  string
		catalogFile string
		offline     bool
	)
	cmd := &cobra.Command{
		Use:   "validate [--config FILE | WORKFLOW...]",
		Short: "Check workflow files (or a config and its workflows) and report every problem",
		Long: `validate loads and compiles workflow files and prints every problem found,
as file:line:col: message, with the source line and a caret under the column.
It exits 1 if there is any problem, 0 (printing "ok: N workflows") otherwise.

With --config, tool references and argument types are checked against the
live backends the config names (each is connected once; an unreachable
backend is reported and references to it are not checked). With --catalog
FILE (JSON: {"tools": [{backend, name, inputSchema, ...}]}), they are
checked against those tools instead. --offline checks neither.

With no arguments, ./vmcp.yaml is validated if it exists.`,
		Example: `  vmcp validate workflows/*.yaml --catalog testdata/catalog/demo.json
  vmcp validate --config vmcp.yaml --offline`,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if configFile != "" && len(args) > 0 {
				return usageErrorf("give either --config or workflow files, not both")
			}
			if configFile == "" && len(args) == 0 {
				if _, err := os.Stat(defaultConfig); err != nil {
					return usageErrorf("no workflow files given and no ./%s here", defaultConfig)
				}
				configFile = defaultConfig
			}
			catalog, err := loadCatalog(catalogFile)
			if err != nil {
				return err
			}
			online := configFile != "" && catalogFile == "" && !offline
			if online {
				cfg, ds := dsl.LoadConfigFile(configFile)
				if cfg == nil {
					ds.Render(stderr)
					return errReported
				}
				live, status, conflicts, closeFn, err := server.LiveCatalog(cmd.Context(), cfg, nil)
				if err != nil {
					return err
				}
				defer closeFn()
				for _, st := range status {
					if st.State != "ready" {
						fmt.Fprintf(stderr, "warning: backend %q is not reachable (%s); references to its tools were not checked\n", st.Name, st.LastError)
					}
				}
				if conflicts != nil {
					fmt.Fprintf(stderr, "%s: %v\n", configFile, conflicts)
					defer func() { err = errReported }()
				}
				catalog = live
			}
			l := newLoader(catalog)
			if configFile != "" {
				if _, err := l.config(configFile); err != nil {
					return err
				}
			}
			for _, f := range args {
				l.file(f)
			}
			if l.report(stderr) {
				return errReported
			}
			n := len(l.plans)
			fmt.Fprintf(stdout, "ok: %d %s\n", n, plural(n, "workflow", "workflows"))
			if catalog == nil && !offline {
				fmt.Fprintln(stderr, "note: tool references and arguments were not checked (give --config to check against the live backends, or --catalog)")
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "validate this config file and the workflows it names")
	f.StringVar(&catalogFile, "catalog", "", "check tool references against this tool catalogue (JSON)")
	f.BoolVar(&offline, "offline", false, "do not contact backends: check workflows without their tool schemas")
	return cmd
}
