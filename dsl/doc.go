// Package dsl turns vmcp's YAML files — workflow files (one composite tool
// each) and the config file vmcp.yaml — into a typed AST that remembers
// where every value came from, and reports every problem it finds as a
// Diagnostic at file:line:col.
//
// # Loading a workflow
//
//	wf, ds := dsl.LoadWorkflowFile("workflows/investigate.yaml")
//	if len(ds) > 0 {
//		ds.Render(os.Stderr) // each problem with its source line and a caret
//		return ds            // Diagnostics is an error
//	}
//	for _, st := range wf.Steps {
//		fmt.Println(st.ID.Value, st.Kind(), wf.Src.NodePos(st.Node))
//	}
//
// Loading runs in four passes, and all of them report every problem, not
// only the first:
//
//  1. YAML: yaml.v3 parses the file into a yaml.Node (syntax errors carry
//     the line yaml.v3 gives); then one document, a mapping at the root,
//     no duplicate keys, no merge keys (<<), no alias cycles or alias bombs.
//  2. Schema: the document, converted to JSON values as NodeValue does, is
//     validated against schemas/workflow.schema.json (or config.schema.json).
//     Each schema error becomes one plain-English message at the YAML node
//     it is about: unknown keys at the key (with a did-you-mean), wrong
//     values at the value, missing keys at the mapping. Alternatives such as
//     on_error's string and object forms produce one message, not a cascade.
//  3. Decode: the node is decoded into Workflow, Step, … Scalars are wrapped
//     (String, Int, Duration, …) and keep their *yaml.Node; wrappers are
//     lenient, because the schema already reported bad values.
//  4. Shape checks the schema cannot express: duplicate step ids, `as`
//     names that would hide a built-in variable; for a config, duplicate
//     backend names, references to unknown backends, prefix formats, the
//     workflow globs and duplicate composite tool names.
//
// The dependency graph, expressions and tool references are checked later,
// by the compiler (package engine).
//
// # Positions
//
// Every node that can be blamed has a position: Source.NodePos for a node,
// and Source.OffsetPos for a byte offset inside a scalar's value (so an
// error in the middle of an expression points into the scalar, also in
// quoted and block scalars). Columns count characters, as yaml.v3 does.
//
// # Loading a config
//
//	cfg, ds := dsl.LoadConfigFile("vmcp.yaml")
//
// ${VAR} in string values is expanded from the environment (an unset
// variable is an error; $${ is a literal ${), except inside composite_tools,
// which are taken literally like workflow files. The files and globs of
// `workflows` are resolved against the config file's directory and loaded;
// Config.LoadedWorkflows holds them followed by the inline composite tools.
// Defaults are filled in with Set false, so Set always means "written in the
// file".
//
// The package-level functions compile the embedded schemas on each call (a
// few milliseconds). To load many files, make a Loader once and reuse it; it
// is safe for concurrent use.
package dsl
