package main

import (
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmcp-dev/vmcp/backends/demo"
)

// newDemoBackendCmd serves one embedded demo backend over stdin and stdout,
// so configs and tests can run the demo backends as real processes.
func newDemoBackendCmd(stdout io.Writer) *cobra.Command {
	names := demo.Names()
	return &cobra.Command{
		Use:   "demo-backend NAME",
		Short: "Serve one demo backend (" + strings.Join(names, ", ") + ") as an MCP server on stdin/stdout",
		Long: `demo-backend serves one of the embedded demo's backends as an MCP server
speaking JSON-RPC on stdin and stdout, the way an MCP client runs a stdio
server. Its data is the demo's deterministic data; what it writes (tickets,
chat posts, deploys, pages) lives in memory until the process exits, which
it does when stdin closes or on SIGINT/SIGTERM.

Backends: ` + strings.Join(names, ", ") + `.

As a backend of vmcp.yaml (builtin: tickets runs the same server in-process):

  backends:
    - name: tickets
      command: [vmcp, demo-backend, tickets]`,
		Args:      exactArgs(1, "one backend name"),
		ValidArgs: names,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(names, args[0]) {
				return usageErrorf("unknown demo backend %q: valid names are %s", args[0], strings.Join(names, ", "))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return demo.ServeStdio(ctx, args[0], os.Stdin, stdout)
		},
	}
}
