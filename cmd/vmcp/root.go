package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Process exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found problems (or failed)
	exitUsage   = 2 // the command line itself is wrong
)

// exitError carries the exit code a command wants. err may be nil when the
// command has already printed everything there is to say (diagnostics).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf reports a wrong command line (exit 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// errReported is a failure whose details were already written to stderr.
var errReported = &exitError{code: exitFailure}

// run executes the command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runWithStdin(args, nil, stdout, stderr)
}

// runWithStdin is run with the input that commands read answers from
// (nil: os.Stdin).
func runWithStdin(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	if stdin != nil {
		root.SetIn(stdin)
	}

	// Cobra's own errors (unknown command or flag, wrong argument count)
	// happen before any command's PersistentPreRun; everything after it is
	// the command's doing.
	started := false
	root.PersistentPreRun = func(*cobra.Command, []string) { started = true }

	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case !started:
		code = exitUsage
	}
	if ee != nil && ee.err == nil {
		return code // already reported
	}
	fmt.Fprintf(stderr, "vmcp: %v\n", err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "vmcp",
		Short: "Virtual MCP Server: one MCP endpoint for many servers, with composite tools",
		Long: `vmcp puts one MCP endpoint in front of many MCP servers and adds composite
tools: workflow files (YAML) that call backend tools in a DAG, ask the user
questions that survive restarts, and run with retries, timeouts and audit.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without a subcommand, print help (and do not treat it as an error).
		Run: func(cmd *cobra.Command, _ []string) { _ = cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	root.CompletionOptions.HiddenDefaultCmd = true
	root.AddCommand(
		newServeCmd(stderr),
		newValidateCmd(stdout, stderr),
		newGraphCmd(stdout, stderr),
		newVersionCmd(stdout),
		newDemoBackendCmd(stdout),
		newToolsCmd(stdout, stderr),
		newCallCmd(stdout, stderr),
		newRunsCmd(stdout, stderr),
		newStateCmd(stdout, stderr),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage exit code and a plainer message.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("expected %s, got %d arguments", what, len(args))
		}
		return nil
	}
}
