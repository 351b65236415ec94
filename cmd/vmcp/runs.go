package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

var runStatuses = []string{"running", "waiting", "interrupted", "completed", "failed", "cancelled"}

func newRunsCmd(stdout, stderr io.Writer) *cobra.Command {
	var conn connFlags
	cmd := &cobra.Command{
		Use:   "runs list|show|resume|cancel",
		Short: "List, inspect, answer and cancel composite-tool runs on a running vmcp",
		Long: `runs works with the composite-tool runs of a running vmcp through its HTTP
API (/api/v1/runs on the host of --url, default $VMCP_URL or
` + defaultURL + `). A run that waits for an answer can be answered here
long after the call that started it returned.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown runs command %q: use list, show, resume or cancel", args[0])
			}
			return cmd.Help()
		},
	}
	conn.register(cmd)
	cmd.AddCommand(
		newRunsListCmd(&conn, stdout),
		newRunsShowCmd(&conn, stdout),
		newRunsResumeCmd(&conn, stdout, stderr),
		newRunsCancelCmd(&conn, stdout),
	)
	return cmd
}

func runPath(id string, rest ...string) string {
	return "/api/v1/runs/" + url.PathEscape(id) + strings.Join(rest, "")
}

// ---------------------------------------------------------------------------
// runs list

type runSummary struct {
	ID       string `json:"id"`
	Workflow string `json:"workflow"`
	Status   string `json:"status"`
	Created  string `json:"created"`
	Updated  string `json:"updated"`
	Step     string `json:"step"`
	Message  string `json:"message"`
}

func newRunsListCmd(conn *connFlags, stdout io.Writer) *cobra.Command {
	var (
		status, workflow string
		limit            int
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "list [--status S] [--workflow W] [--limit N] [--json]",
		Short: "List your runs, newest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status != "" && !slices.Contains(runStatuses, status) {
				return usageErrorf("--status %q: want one of %s", status, strings.Join(runStatuses, ", "))
			}
			if limit < 0 || limit > 100 {
				return usageErrorf("--limit %d: want 1 to 100", limit)
			}
			api, err := newAPIClient(conn)
			if err != nil {
				return err
			}
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			if workflow != "" {
				q.Set("workflow", workflow)
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			path := "/api/v1/runs"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			body, err := api.do(cmd.Context(), http.MethodGet, path, nil)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := stdout.Write(indentJSON(body))
				return err
			}
			var list struct {
				Runs []runSummary `json:"runs"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				return fmt.Errorf("unexpected answer from the runs API: %w", err)
			}
			if len(list.Runs) == 0 {
				fmt.Fprintln(stdout, "no runs")
				return nil
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tWORKFLOW\tUPDATED\tWAITING ON")
			now := time.Now()
			for _, r := range list.Runs {
				waiting := ""
				if r.Step != "" {
					waiting = truncate(r.Step+": "+strings.Join(strings.Fields(r.Message), " "), 70)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, r.Workflow, age(r.Updated, now), waiting)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only runs in this status: "+strings.Join(runStatuses, ", "))
	f.StringVar(&workflow, "workflow", "", "only runs of this workflow")
	f.IntVar(&limit, "limit", 0, "at most N runs (1-100; default: the server's, 50)")
	f.BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}

// age renders an RFC 3339 time as "5s ago", "3m ago", ... (or the time
// itself for old or unparsable ones).
func age(ts string, now time.Time) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return t.Local().Format(time.DateTime)
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format(time.DateTime)
}

// ---------------------------------------------------------------------------
// runs show

type runQuestion struct {
	Step     string          `json:"step"`
	Message  string          `json:"message"`
	Schema   json.RawMessage `json:"schema"`
	Deadline string          `json:"deadline"`
}

type runDetail struct {
	runSummary
	Question *runQuestion `json:"question"`
	Steps    map[string]struct {
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
		Error    any    `json:"error"`
	} `json:"steps"`
	Output  json.RawMessage `json:"output"`
	Error   string          `json:"error"`
	History []struct {
		At     string          `json:"at"`
		Who    string          `json:"who"`
		Kind   string          `json:"kind"`
		Step   string          `json:"step"`
		Detail json.RawMessage `json:"detail"`
	} `json:"history"`
}

func getRun(ctx context.Context, api *apiClient, id string) (*runDetail, json.RawMessage, error) {
	body, err := api.do(ctx, http.MethodGet, runPath(id), nil)
	if err != nil {
		return nil, nil, err
	}
	var d runDetail
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, nil, fmt.Errorf("unexpected answer from the runs API: %w", err)
	}
	return &d, body, nil
}

func newRunsShowCmd(conn *connFlags, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show RUN_ID [--json]",
		Short: "Show a run: status, steps, the pending question and the history",
		Args:  exactArgs(1, "a run id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := newAPIClient(conn)
			if err != nil {
				return err
			}
			d, body, err := getRun(cmd.Context(), api, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				_, err := stdout.Write(indentJSON(body))
				return err
			}
			printRun(stdout, d, conn.urlHint())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}

func printRun(w io.Writer, d *runDetail, urlHint string) {
	fmt.Fprintf(w, "Run %s\n", d.ID)
	fmt.Fprintf(w, "  workflow  %s\n", d.Workflow)
	fmt.Fprintf(w, "  status    %s\n", d.Status)
	fmt.Fprintf(w, "  created   %s\n", d.Created)
	fmt.Fprintf(w, "  updated   %s\n", d.Updated)
	if d.Error != "" {
		fmt.Fprintf(w, "  error     %s\n", d.Error)
	}
	if q := d.Question; q != nil {
		fmt.Fprintf(w, "\nQuestion (step %s", q.Step)
		if q.Deadline != "" {
			fmt.Fprintf(w, ", deadline %s", q.Deadline)
		}
		fmt.Fprintf(w, "):\n%s\n", indentText(q.Message, "  "))
		if fields, err := parseSchema(q.Schema); err == nil && len(fields) > 0 {
			fmt.Fprintln(w, "  Fields:")
			for _, fd := range fields {
				line := fmt.Sprintf("    %s: %s", fd.name, fd.prompt())
				if fd.required {
					line += ", required"
				}
				if t := fd.s.Title; t != "" && t != fd.name {
					line += " — " + t
				}
				fmt.Fprintln(w, line)
				if cs := fieldChoices(fd); len(cs) > 0 {
					vals := make([]string, len(cs))
					for i, c := range cs {
						vals[i] = fmt.Sprintf("%d) %s", i+1, showValue(c.value))
					}
					fmt.Fprintf(w, "      %s\n", strings.Join(vals, "  "))
				}
			}
		}
		fmt.Fprintf(w, "  Schema: %s\n", compactJSON(q.Schema))
	}
	if len(d.Steps) > 0 {
		fmt.Fprintln(w, "\nSteps:")
		ids := make([]string, 0, len(d.Steps))
		for id := range d.Steps {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, id := range ids {
			s := d.Steps[id]
			line := fmt.Sprintf("  %s\t%s", id, s.Status)
			if s.Attempts > 1 {
				line += fmt.Sprintf(" (%d attempts)", s.Attempts)
			}
			if e := errText(s.Error); e != "" {
				line += "\t" + truncate(e, 100)
			}
			fmt.Fprintln(tw, line)
		}
		_ = tw.Flush()
	}
	if len(d.Output) > 0 && string(d.Output) != "null" {
		fmt.Fprintf(w, "\nOutput:\n%s\n", indentText(prettyJSONText(string(d.Output)), "  "))
	}
	if len(d.History) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		for _, h := range d.History {
			line := "  " + h.At + "  " + h.Kind
			if h.Step != "" {
				line += " " + h.Step
			}
			if h.Who != "" {
				line += " by " + h.Who
			}
			if len(h.Detail) > 0 && string(h.Detail) != "null" {
				line += ": " + compactJSON(h.Detail)
			}
			fmt.Fprintln(w, line)
		}
	}
	if d.Status == "waiting" {
		fmt.Fprintf(w, "\nAnswer it with:  vmcp runs resume %s%s\n", d.ID, urlHint)
	}
}

func fieldChoices(fd *field) []choice {
	switch fd.kind() {
	case "enum":
		return fd.s.choices()
	case "multi":
		return fd.s.Items.choices()
	}
	return nil
}

func errText(e any) string {
	switch e := e.(type) {
	case nil:
		return ""
	case string:
		return e
	case map[string]any:
		if m, ok := e["message"].(string); ok {
			return m
		}
	}
	return jsonText(e)
}

func compactJSON(raw json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

// ---------------------------------------------------------------------------
// runs resume

func newRunsResumeCmd(conn *connFlags, stdout, stderr io.Writer) *cobra.Command {
	var (
		action, content string
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "resume RUN_ID [--action accept|decline|cancel] [--content JSON|@FILE|-] [--json]",
		Short: "Answer a waiting run's question and continue the run",
		Long: `resume answers the question a run waits on and continues the run. With
--action accept (the default) and no --content, the question is shown as a
form (as in 'vmcp call') and the answers are read from stdin; further
questions of the same run are asked the same way. --content gives the
answer as JSON instead (inline, @file or - for stdin). --action decline or
--action cancel refuses the question. The run's outcome is printed like a
tool result (--json: the API's whole answer).`,
		Args: exactArgs(1, "a run id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if action != "accept" && action != "decline" && action != "cancel" {
				return usageErrorf("--action %q: want accept, decline or cancel", action)
			}
			if content != "" && action != "accept" {
				return usageErrorf("--content goes with --action accept")
			}
			errw := &syncWriter{w: stderr}
			in := bufio.NewReader(cmd.InOrStdin())
			api, err := newAPIClient(conn)
			if err != nil {
				return err
			}
			id := args[0]
			ans := &formAnswer{Action: action}
			interactive := action == "accept" && content == ""
			if content != "" {
				raw, _, err := readJSONArg("--content", content, in)
				if err != nil {
					return err
				}
				if err := json.Unmarshal(raw, &ans.Content); err != nil {
					return usageErrorf("--content: %v", err)
				}
			}
			f := newForm(in, errw)
			f.echo = !isTerminal(cmd.InOrStdin())
			if interactive {
				d, _, err := getRun(cmd.Context(), api, id)
				if err != nil {
					return err
				}
				if d.Status != "waiting" || d.Question == nil {
					return fmt.Errorf("run %s is %s, not waiting for an answer", id, d.Status)
				}
				if ans, err = f.ask(d.Question.Message, d.Question.Schema); err != nil {
					return noAnswer(err, id)
				}
			}
			return resumeRun(cmd.Context(), api, f, id, ans, interactive, jsonMode(asJSON, "body"), stdout, errw, conn.urlHint())
		},
	}
	f := cmd.Flags()
	f.StringVar(&action, "action", "accept", "accept, decline or cancel")
	f.StringVar(&content, "content", "", "the answer (with accept): a JSON object, @FILE or - for stdin; without it, a form asks")
	f.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	return cmd
}

func noAnswer(err error, id string) error {
	if errors.Is(err, errNoInput) {
		return fmt.Errorf("%w; run %s is still waiting", err, id)
	}
	return err
}

// jsonMode is how resumeRun prints JSON: "" (not at all), "result" (the
// tool result, as `call --json`) or "body" (the API's whole answer).
func jsonMode(on bool, mode string) string {
	if on {
		return mode
	}
	return ""
}

// resumeRun posts an answer to a waiting run and prints the outcome.
// Interactive (the answer came from the form): a refused answer and the
// run's next question are asked again with the form.
func resumeRun(ctx context.Context, api *apiClient, f *form, id string, ans *formAnswer, interactive bool, asJSON string, stdout, stderr io.Writer, urlHint string) error {
	for {
		body, err := api.do(ctx, http.MethodPost, runPath(id, "/resume"), ans)
		if err != nil {
			var ae *apiError
			if interactive && errors.As(err, &ae) && ae.code == "invalid_answer" {
				fmt.Fprintf(stderr, "  ! the server refused the answer: %s\n", ae.message)
				d, _, err := getRun(ctx, api, id)
				if err != nil {
					return err
				}
				if d.Question == nil {
					return fmt.Errorf("run %s is %s, not waiting for an answer", id, d.Status)
				}
				if ans, err = f.ask(d.Question.Message, d.Question.Schema); err != nil {
					return noAnswer(err, id)
				}
				continue
			}
			return err
		}
		var d struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(body, &d); err != nil || len(d.Result) == 0 {
			return fmt.Errorf("unexpected answer from the runs API: %s", snippet(body))
		}
		r, err := parseResult(d.Result)
		if err != nil {
			return err
		}
		if p := r.paused(); p != nil && interactive {
			next, err := f.ask(p.Message, p.Schema)
			if err == nil {
				ans = next
				continue
			}
			if !errors.Is(err, errNoInput) {
				return err
			}
		}
		if asJSON == "body" {
			if _, err := stdout.Write(indentJSON(body)); err != nil {
				return err
			}
			if r.IsError {
				return errReported
			}
			return nil
		}
		_, err = outcome(stdout, stderr, d.Result, asJSON == "result", urlHint)
		return err
	}
}

// ---------------------------------------------------------------------------
// runs cancel

func newRunsCancelCmd(conn *connFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel RUN_ID",
		Short: "Cancel a run (a running one stops its backend calls, wherever it executes)",
		Args:  exactArgs(1, "a run id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := newAPIClient(conn)
			if err != nil {
				return err
			}
			body, err := api.do(cmd.Context(), http.MethodPost, runPath(args[0], "/cancel"), nil)
			if err != nil {
				return err
			}
			var r struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				return fmt.Errorf("unexpected answer from the runs API: %s", snippet(body))
			}
			fmt.Fprintf(stdout, "run %s %s\n", r.ID, r.Status)
			return nil
		},
	}
}
