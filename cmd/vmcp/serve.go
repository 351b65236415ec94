package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vmcp-dev/vmcp/workflows"
)

// defaultConfig is the config file used when none is named.
const defaultConfig = "vmcp.yaml"

func newServeCmd(stderr io.Writer) *cobra.Command {
	var (
		configFile string
		listen     string
		stdio      bool
		statePath  string
	)
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--listen ADDR] [--stdio] [--state PATH]",
		Short: "Serve the gateway (with no config and no ./vmcp.yaml: the embedded demo)",
		Long: `serve loads the config (--config, else ./vmcp.yaml if present, else the
embedded demo: its workflows from workflows/ and in-process demo backends),
compiles every workflow, and serves MCP on --listen (/mcp) or on stdin and
stdout with --stdio.

Status: the gateway itself is not built yet. serve loads and compiles the
workflows, reports any problem (exit 1), says what it would serve, and exits 0.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			l := newLoader(nil)
			var source string
			switch {
			case configFile != "":
				source = configFile
			case fileExists(defaultConfig):
				source = "./" + defaultConfig
				configFile = defaultConfig
			default:
				source = "the embedded demo"
				if err := l.fsys(workflows.FS, "workflows"); err != nil {
					return err
				}
			}
			if configFile != "" {
				cfg, err := l.config(configFile)
				if err != nil {
					return err
				}
				// Flags win over the file; the file wins over the defaults.
				if cfg != nil && !cmd.Flags().Changed("listen") && cfg.Listen.Value != "" {
					listen = cfg.Listen.Value
				}
				if cfg != nil && !cmd.Flags().Changed("state") && cfg.State.Path.Value != "" {
					statePath = cfg.State.Path.Value
				}
			}
			if l.report(stderr) {
				return errReported
			}
			names := make([]string, len(l.plans))
			for i, c := range l.plans {
				names[i] = c.plan.Name
			}
			n := len(names)
			fmt.Fprintf(stderr, "vmcp: loaded %d %s from %s: %s\n", n, plural(n, "workflow", "workflows"), source, strings.Join(names, ", "))
			where := "http://" + listen + "/mcp"
			if stdio {
				where = "stdin/stdout"
			}
			fmt.Fprintf(stderr, "vmcp: the MCP gateway is not built yet, so nothing is served on %s (state file: %s).\n", where, statePath)
			fmt.Fprintln(stderr, "vmcp: what works today: vmcp validate, vmcp graph.")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "config file (default ./vmcp.yaml if present, else the embedded demo)")
	f.StringVar(&listen, "listen", "127.0.0.1:4483", "HTTP listen address for /mcp and the API")
	f.BoolVar(&stdio, "stdio", false, "serve MCP on stdin/stdout instead of HTTP")
	f.StringVar(&statePath, "state", ".vmcp/state.db", "bbolt state file (created if missing)")
	return cmd
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
