package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
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

With --catalog FILE (JSON: {"tools": [{backend, name, inputSchema, ...}]}),
tool references and arguments are checked against those tools. Without it,
they are not checked: connecting to the configured backends to fetch their
schemas is not built yet, so validation is always offline for now.

With no arguments, ./vmcp.yaml is validated if it exists.`,
		Example: `  vmcp validate workflows/*.yaml --catalog testdata/catalog/demo.json
  vmcp validate --config vmcp.yaml --offline`,
		RunE: func(cmd *cobra.Command, args []string) error {
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
				fmt.Fprintln(stderr, "note: tool references and arguments were not checked (no --catalog; checking against live backends is not built yet)")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "validate this config file and the workflows it names")
	f.StringVar(&catalogFile, "catalog", "", "check tool references against this tool catalogue (JSON)")
	f.BoolVar(&offline, "offline", false, "do not contact backends (currently always the case)")
	return cmd
}
