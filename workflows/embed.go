// Package workflows holds the workflow files of the embedded demo (SPEC §7).
// They are ordinary workflow YAML, readable and editable in place; the
// `serve` command compiles them when there is no vmcp.yaml to say otherwise.
package workflows

import "embed"

// FS holds every *.yaml file of this directory, by base name.
//
//go:embed *.yaml
var FS embed.FS
