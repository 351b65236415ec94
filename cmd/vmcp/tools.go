package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newToolsCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "tools [--json]",
		Short: "List the tools a running vmcp serves",
		Long: `tools connects to a running vmcp (--url, default $VMCP_URL or
` + defaultURL + `) and lists its tools: name, annotations (ro = read-only;
destructive, idempotent, open-world; a trailing ? marks a hint the tool does
not declare, shown with the MCP default) and the first line of the
description. --json prints the tools exactly as the server sent them.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dialMCP(cmd.Context(), &conn, false, nil)
			if err != nil {
				return err
			}
			defer c.close()
			tools, err := c.listTools(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				var buf bytes.Buffer
				buf.WriteString(`{"tools":[`)
				for i, t := range tools {
					if i > 0 {
						buf.WriteByte(',')
					}
					buf.Write(t)
				}
				buf.WriteString("]}")
				_, err := stdout.Write(indentJSON(buf.Bytes()))
				return err
			}
			return printTools(stdout, tools)
		},
	}
	conn.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the tools/list JSON (all pages)")
	return cmd
}

type toolSummary struct {
	Name        string `json:"name"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Annotations struct {
		Title           string `json:"title"`
		ReadOnlyHint    *bool  `json:"readOnlyHint"`
		DestructiveHint *bool  `json:"destructiveHint"`
		IdempotentHint  *bool  `json:"idempotentHint"`
		OpenWorldHint   *bool  `json:"openWorldHint"`
	} `json:"annotations"`
}

func printTools(w io.Writer, tools []json.RawMessage) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHINTS\tDESCRIPTION")
	assumed := false
	for _, raw := range tools {
		var t toolSummary
		if err := json.Unmarshal(raw, &t); err != nil {
			return fmt.Errorf("tools/list: %w", err)
		}
		hints, guessed := hintSummary(&t)
		assumed = assumed || guessed
		desc := firstLine(t.Description)
		if desc == "" {
			desc = t.Title
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, hints, truncate(desc, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d %s", len(tools), plural(len(tools), "tool", "tools"))
	if assumed {
		fmt.Fprint(w, "; ? = hint not declared, MCP default assumed")
	}
	fmt.Fprintln(w)
	return nil
}

// hintSummary condenses the annotations: ro, or destructive / idempotent /
// open-world. Undeclared hints whose MCP default is true are shown with a
// trailing "?".
func hintSummary(t *toolSummary) (string, bool) {
	a := t.Annotations
	guessed := false
	mark := func(name string, v *bool, def bool) string {
		switch {
		case v == nil && def:
			guessed = true
			return name + "?"
		case v != nil && *v:
			return name
		}
		return ""
	}
	var parts []string
	if a.ReadOnlyHint != nil && *a.ReadOnlyHint {
		parts = append(parts, "ro")
	} else {
		parts = append(parts, mark("destructive", a.DestructiveHint, true), mark("idempotent", a.IdempotentHint, false))
	}
	parts = append(parts, mark("open-world", a.OpenWorldHint, true))
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "-", guessed
	}
	return strings.Join(out, ","), guessed
}
