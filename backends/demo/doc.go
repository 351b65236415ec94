// Package demo holds the embedded demo's backends (SPEC §7): six small MCP
// servers, built with mcp-go, that stand in for an incident tracker, log
// search, metrics, a deployment system, chat and a ticket tracker.
//
//	srv, err := demo.New("incidents")       // *server.MCPServer, fresh state
//	c, err := client.NewInProcessClient(srv) // or demo.ServeStdio over pipes
//
// Their data is deterministic: no randomness and no wall clock. The demo's
// "now" is 2026-11-25T10:00:00Z; writes are stamped one minute apart after
// it. The story the flagship workflow (investigate_incident) tells:
//
//   - INC-1042, "Checkout payments timing out" (checkout, high, triggered
//     at 09:12, teams payments #payments-oncall and sre #sre): over the
//     last hour checkout logged 412 errors in 5632 lines, mostly upstream
//     timeouts from payments-gateway, its error rate is 0.0668 (0.083 over
//     15m) with a p99 of 1902 ms, and v2.14.0 reached production at 09:05.
//     The workflow asks before paging.
//   - INC-1043 (search, low, acknowledged) is quiet: 3 errors an hour,
//     an error rate of 0.0012. Nobody is asked anything.
//   - INC-1041 (auth, acknowledged) is open too; INC-1039 (checkout) is
//     resolved. The services are auth, checkout and search.
//
// Writes live in memory, per server: page_oncall and add_note (PG-n, N-n),
// deploy and rollback (D-312 on), chat posts (M-n), tickets (T-1, T-2, … in
// creation order, readable with tickets.get). Unknown ids and services, and
// bad arguments, are tool errors (isError: true) with a clear text. Every
// success carries its output both as structuredContent and as a text item
// with the same JSON.
//
// The tools' schemas and annotations are defined here, next to their
// handlers; testdata/catalog/demo.json is generated from them
// (go test ./backends/demo -run TestCatalog -update) and a test keeps the
// two equal. NewWithOptions adds latency and injected failures per tool
// for tests of retries and timeouts.
package demo
