package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newGraphCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		format      string
		catalogFile string
	)
	cmd := &cobra.Command{
		Use:   "graph WORKFLOW",
		Short: "Print a workflow's step graph as Mermaid or Graphviz DOT",
		Long: `graph compiles a workflow and prints its DAG: one node per step (tool
steps as boxes, for_each steps as double boxes, questions as hexagons,
conditional steps with a dashed border) and one edge per dependency. Edges
from depends_on are solid; edges that exist only because a step references
another step's result are dashed and labelled "ref".`,
		Example: `  vmcp graph workflows/investigate_incident.yaml
  vmcp graph workflows/investigate_incident.yaml --format dot | dot -Tsvg > plan.svg`,
		Args: exactArgs(1, "one workflow file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "mermaid" && format != "dot" {
				return usageErrorf("--format must be mermaid or dot, not %q", format)
			}
			catalog, err := loadCatalog(catalogFile)
			if err != nil {
				return err
			}
			l := newLoader(catalog)
			l.file(args[0])
			if l.report(stderr) || len(l.plans) == 0 {
				return errReported
			}
			p := l.plans[0].plan
			if format == "dot" {
				fmt.Fprint(stdout, p.DOT())
			} else {
				fmt.Fprint(stdout, p.Mermaid())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "mermaid", "output format: mermaid or dot")
	cmd.Flags().StringVar(&catalogFile, "catalog", "", "resolve tool references against this tool catalogue (JSON)")
	return cmd
}
