// Package state keeps vmcp's runs in one bbolt file: what each run started
// with (workflow source, parameters), its checkpoint, the question it waits
// on, its history, and retention. It imports nothing else of vmcp's: the
// engine's checkpoint is stored as opaque JSON.
//
// Driver is the contract (the transitions below, reads, recovery,
// retention, the token key) that Store implements here and the PostgreSQL
// driver implements in state/postgres for several replicas; the contract
// suite in state/statetest runs against both.
//
// # Transitions
//
// Every method that changes a run is a transition: one durable commit, or
// a refusal that changes nothing (a *TransitionError wrapping ErrNotFound,
// ErrNotWaiting, ErrStaleAnswer, ErrNotRunning, …; test with errors.Is).
// A driver for another database implements the same transitions, each in
// one transaction.
//
//	Create                      → running
//	Checkpoint   running        → running      (checkpoint, steps in flight)
//	Pause        running, interrupted → waiting (checkpoint, question, seq+1)
//	Claim        waiting        → running      (the answer, once per seq)
//	ClaimDeadline waiting, due  → running      (the time-out answer, once)
//	Resume       interrupted    → running
//	Finish       running, interrupted → completed | failed | cancelled
//	Cancel       waiting, interrupted → cancelled
//	Recover      running        → interrupted  (at startup, every such run)
//	AppendHistory, Prune
//
// A session, at its simplest:
//
//	s, err := state.Open(".vmcp/state.db", &state.Options{Retention: 7 * 24 * time.Hour})
//	if err != nil { … }  // "state file .vmcp/state.db is in use by another vmcp process …"
//	defer s.Close()
//	interrupted, err := s.Recover(ctx) // runs that were executing when vmcp stopped
//
//	r := &state.Run{Workflow: "deploy", Owner: "alice", Definition: src, DefinitionName: "deploy.yaml", Params: params}
//	err = s.Create(ctx, r) // assigns r.ID ("r_" + 128 random bits)
//	seq, err := s.Pause(ctx, r.ID, checkpoint, state.Question{Step: "approve", Message: "Deploy?", Schema: schema})
//	// The run is on disk: now send the question (a resume token binds r.ID, "approve", seq).
//
//	// Later, from any surface, maybe twice at once: exactly one wins.
//	run, err := s.Claim(ctx, r.ID, "approve", seq, "bob", answer)
//	if errors.Is(err, state.ErrNotWaiting) { … } // answered already, or cancelled
//	// Resume the engine from run.Checkpoint and run.Definition (the source
//	// the run started with), then:
//	err = s.Finish(ctx, r.ID, state.StatusCompleted, result, "")
//
// Every answer is in the run's history (who, when, the answer's JSON); the
// history is append-only. After Claim and before the engine's next
// checkpoint, the answer exists only there: a run interrupted in between
// finds it in its last "answered" event.
//
// # Deadlines, listing, retention
//
// Waiting questions with a deadline are kept in a deadline index: a server
// sets one timer for NextDeadline, then applies DueDeadlines with
// ClaimDeadline. Nothing is kept in memory per run, and there is no timer
// or goroutine per waiting run. List pages newest first through indexes by
// owner and status, owner, status and workflow. Prune deletes finished
// runs older than the retention; waiting and interrupted runs stay.
//
// # Durability and throughput
//
// Writes are fsynced before a transition returns. A lone transition
// commits at once; transitions that arrive while a commit is in flight
// share the next commit (group commit, no batching delay; see
// Options.BatchSize and BenchmarkPause). A transition that fails is taken
// out of its group and the others commit without it, so their closures
// may run more than once and are written to be idempotent. The
// file has a format version (Open refuses a newer one) and a key for
// sealing resume tokens (Key). Only one process may open the file; Open
// gives up after Options.LockTimeout with ErrLocked. Check verifies the
// file (bbolt's own check and every index against the documents).
package state
