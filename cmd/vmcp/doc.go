// Command vmcp is the Virtual MCP Server: one MCP endpoint in front of many
// MCP servers, with a workflow engine that turns YAML workflow files into
// composite tools.
//
// This package holds flags and commands only; the work happens in dsl
// (loading), engine (compiling and running) and, later, server. Each
// command lives in its own file:
//
//	vmcp validate workflows/*.yaml --catalog testdata/catalog/demo.json
//	vmcp graph workflows/investigate_incident.yaml --format dot | dot -Tsvg > plan.svg
//	vmcp serve                 # the embedded demo when there is no ./vmcp.yaml
//	vmcp version
//
// Commands never call os.Exit: they return an error, and run maps it to the
// process exit code (0 success, 1 failure, 2 usage error). Diagnostics and
// progress go to stderr; stdout carries only results (a graph, a version,
// "ok: N workflows"), so it stays usable in pipes and for `serve --stdio`.
package main
