package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"
)

// progressToken marks the progress notifications of this client's call.
const progressToken = "vmcp-cli"

func newCallCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		conn     connFlags
		argsFlag string
		asJSON   bool
		noElicit bool
	)
	cmd := &cobra.Command{
		Use:   "call TOOL [--args JSON|@FILE|-] [--json] [--no-elicit]",
		Short: "Call a tool on a running vmcp, answering its questions in the terminal",
		Long: `call calls one tool on a running vmcp (--url, default $VMCP_URL or
` + defaultURL + `) with the arguments of --args: inline JSON, @file.json,
or - to read the JSON from stdin.

When the tool asks a question (a composite tool's elicitation step), the
question is shown as a form on stderr and the answers are read from stdin a
line at a time: Enter keeps a [default], a choice is picked by its number or
its value, yes/no questions take y, n, yes, no, true or false, and !decline or
!cancel refuses the question. If the input ends first, or with --no-elicit
(the client then does not offer to answer questions), the run stays waiting
and call prints how to answer it later with 'vmcp runs resume'.

Progress is printed to stderr as it arrives. The result's text goes to
stdout (--json: the whole result); a tool error exits with status 1, a
paused run with status 0.`,
		Args: exactArgs(1, "one tool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			errw := &syncWriter{w: stderr}
			in := bufio.NewReader(cmd.InOrStdin())
			toolArgs := json.RawMessage(`{}`)
			if argsFlag != "" {
				var err error
				if toolArgs, in, err = readJSONArg("--args", argsFlag, in); err != nil {
					return err
				}
			}
			f := newForm(in, errw)
			f.echo = !isTerminal(cmd.InOrStdin())
			cl := &callClient{conn: &conn, name: args[0], args: toolArgs, asJSON: asJSON, elicit: !noElicit,
				form: f, stdout: stdout, stderr: errw}
			return cl.run(cmd)
		},
	}
	conn.register(cmd)
	f := cmd.Flags()
	f.StringVar(&argsFlag, "args", "", "tool arguments: a JSON object, @FILE or - for stdin (default {})")
	f.BoolVar(&asJSON, "json", false, "print the whole result as JSON")
	f.BoolVar(&noElicit, "no-elicit", false, "do not offer to answer questions: a composite tool that asks one returns a paused run")
	return cmd
}

type callClient struct {
	conn   *connFlags
	name   string
	args   json.RawMessage
	asJSON bool
	elicit bool
	form   *form
	stdout io.Writer
	stderr io.Writer

	mu    sync.Mutex
	quiet bool // the call returned: late progress is not printed
}

func (cl *callClient) progress(tok string, p map[string]any) {
	if tok != progressToken {
		return
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.quiet {
		return
	}
	fmt.Fprintln(cl.stderr, progressLine(p))
}

// progressLine renders a progress notification: "[3/8] step logs completed".
func progressLine(p map[string]any) string {
	n := showValue(p["progress"])
	if total, ok := p["total"]; ok && total != nil {
		n += "/" + showValue(total)
	}
	msg, _ := p["message"].(string)
	if msg == "" {
		return "[" + n + "]"
	}
	return "[" + n + "] " + msg
}

func (cl *callClient) run(cmd *cobra.Command) error {
	ctx := cmd.Context()
	c, err := dialMCP(ctx, cl.conn, cl.elicit, cl.progress)
	if err != nil {
		return err
	}
	defer c.close()

	type callResult struct {
		raw json.RawMessage
		err error
	}
	done := make(chan callResult, 1)
	go func() {
		raw, err := c.callTool(ctx, cl.name, cl.args, progressToken)
		done <- callResult{raw, err}
	}()

	// Questions are answered as they come. An answer the server no longer
	// waits for (its live wait ended while the form was open) is kept: the
	// call then returns a paused run, and the answer goes to it through the
	// API.
	var (
		late *formAnswer
		res  callResult
	)
wait:
	for {
		select {
		case q := <-c.questions():
			ans, err := cl.form.ask(q.message, q.schema)
			if err != nil {
				// No answer: the server pauses the run.
				if rerr := c.reply(ctx, q, nil, err); rerr != nil && !errors.Is(rerr, errNotWaiting) {
					return rerr
				}
				if !errors.Is(err, errNoInput) {
					fmt.Fprintf(cl.stderr, "vmcp: %v\n", err)
				}
				continue
			}
			switch err := c.reply(ctx, q, ans, nil); {
			case errors.Is(err, errNotWaiting):
				late = ans
			case err != nil:
				return err
			default:
				late = nil
			}
		case res = <-done:
			break wait
		}
	}
	cl.mu.Lock()
	cl.quiet = true
	cl.mu.Unlock()
	if res.err != nil {
		return res.err
	}
	r, err := parseResult(res.raw)
	if err != nil {
		return err
	}
	if p := r.paused(); p != nil && late != nil {
		fmt.Fprintf(cl.stderr, "(the server stopped waiting for the answer; sending it to run %s)\n", p.ID)
		api, err := newAPIClient(cl.conn)
		if err != nil {
			return err
		}
		return resumeRun(ctx, api, cl.form, p.ID, late, true, jsonMode(cl.asJSON, "result"), cl.stdout, cl.stderr, cl.conn.urlHint())
	}
	_, err = outcome(cl.stdout, cl.stderr, res.raw, cl.asJSON, cl.conn.urlHint())
	return err
}
