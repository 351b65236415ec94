package state

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary re-executes itself as a child process for the kill and
// lock tests; this variable tells the child what to do.
const childEnv = "VMCP_STATE_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "churn":
		os.Exit(childChurn(os.Getenv("VMCP_STATE_TEST_PATH")))
	case "open":
		os.Exit(childOpen(os.Getenv("VMCP_STATE_TEST_PATH")))
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// childChurn opens the store and makes runs go through every transition
// from 16 goroutines until it is killed. After each acknowledged
// transition it prints "ack ID STATUS SEQ" (unbuffered: a line the parent
// reads was acknowledged before the kill).
func childChurn(path string) int {
	s, err := Open(path, nil)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ctx := context.Background()
	if _, err := s.Recover(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	var outMu sync.Mutex
	ack := func(id, status string, seq uint64) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, "ack %s %s %d\n", id, status, seq)
		outMu.Unlock()
	}
	fail := func(err error) {
		outMu.Lock()
		fmt.Fprintln(os.Stdout, "error", err)
		outMu.Unlock()
		os.Exit(1)
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for n := 0; ; n++ {
				r := &Run{Workflow: "churn", Owner: fmt.Sprint("owner", w%3), Definition: fmt.Appendf(nil, "name: churn%d\n", w%4),
					Params: json.RawMessage(`{"w":` + strconv.Itoa(w) + `}`)}
				if err := s.Create(ctx, r); err != nil {
					fail(err)
				}
				ack(r.ID, StatusRunning, 0)
				var seq uint64
				var err error // per worker: the Open error above is shared
				for round := range 1 + rng.IntN(3) {
					// Checkpoints from 100 bytes to 200 KiB: small ones share a
					// page, big ones take overflow pages.
					if err := s.Checkpoint(ctx, r.ID, churnCheckpoint(r.ID, round, rng), []string{"step"}); err != nil {
						fail(err)
					}
					q := Question{Step: "approve", Message: "ok?", Deadline: time.Now().Add(time.Duration(rng.IntN(3600)) * time.Second)}
					if seq, err = s.Pause(ctx, r.ID, churnCheckpoint(r.ID, round, rng), q); err != nil {
						fail(err)
					}
					ack(r.ID, StatusWaiting, seq)
					if rng.IntN(4) == 0 {
						break // leave it waiting
					}
					if _, err := s.Claim(ctx, r.ID, "approve", seq, "child", json.RawMessage(`{"action":"accept"}`)); err != nil {
						fail(err)
					}
					ack(r.ID, StatusRunning, seq)
				}
				if got, _ := s.Get(ctx, r.ID); got.Status == StatusRunning {
					switch rng.IntN(3) {
					case 0:
						err = s.Finish(ctx, r.ID, StatusCompleted, json.RawMessage(`{"ok":true}`), "")
						ack(r.ID, StatusCompleted, seq)
					case 1:
						err = s.Finish(ctx, r.ID, StatusFailed, nil, "boom")
						ack(r.ID, StatusFailed, seq)
					default: // leave it running: the parent finds it interrupted
					}
				} else if rng.IntN(2) == 0 {
					err = s.Cancel(ctx, r.ID, "child")
					ack(r.ID, StatusCancelled, seq)
				}
				if err != nil {
					fail(err)
				}
				if w == 0 && n%20 == 19 {
					if _, err := s.Prune(ctx, time.Now().Add(-time.Second)); err != nil {
						fail(err)
					}
				}
			}
		})
	}
	wg.Wait()
	return 0
}

func churnCheckpoint(id string, round int, rng *rand.Rand) json.RawMessage {
	size := 100
	if rng.IntN(4) == 0 {
		size = rng.IntN(200 << 10)
	}
	return fmt.Appendf(nil, `{"run":%q,"round":%d,"pad":%q}`, id, round, strings.Repeat("p", size))
}

// childOpen tries to open a file the parent holds and prints the error and
// how long it took.
func childOpen(path string) int {
	start := time.Now()
	s, err := Open(path, nil)
	if err == nil {
		_ = s.Close()
		fmt.Println("opened")
		return 0
	}
	fmt.Printf("%d %v\n", time.Since(start).Milliseconds(), err)
	return 0
}

func child(t *testing.T, mode, path string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "VMCP_STATE_TEST_PATH="+path)
	cmd.Stderr = os.Stderr
	return cmd
}

type acked struct {
	status string
	seq    uint64
}

// TestKillMidWrite SIGKILLs a child while it writes runs, reopens the file
// and checks every run is whole and every acknowledged transition is there;
// three rounds on the same file (each child recovers the previous one's
// runs first).
func TestKillMidWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("kill test")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	last := map[string]acked{}
	for round := range 3 {
		cmd := child(t, "churn", path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		acks, target := 0, 300+rand.IntN(700)
		for lines.Scan() {
			f := strings.Fields(lines.Text())
			if f[0] == "error" {
				t.Fatalf("child: %s", lines.Text())
			}
			seq, _ := strconv.ParseUint(f[3], 10, 64)
			last[f[1]] = acked{f[2], seq}
			if acks++; acks == target {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL", round, err)
		}

		s, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d after SIGKILL: %v", round, err)
		}
		verifyAcked(t, s, last)
		if t.Failed() {
			t.FailNow()
		}
		n, err := s.Recover(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d after Recover: %v", round, err)
		}
		runs := listAll(t, s, Filter{})
		t.Logf("round %d: killed after %d acknowledged transitions; %d runs in the file, %d interrupted", round, acks, len(runs), len(n))
		// The next child leaves these runs alone: what is in the file now
		// (acknowledged or not) is what the next round must find.
		for id := range last {
			if r, err := s.Get(t.Context(), id); err == nil {
				last[id] = acked{r.Status, r.Seq}
			}
		}
		_ = s.Close()
	}
}

// verifyAcked checks every acknowledged transition survived: each run is
// there (unless pruned after finishing), whole, and at least as far as its
// last acknowledgement.
func verifyAcked(t *testing.T, s *Store, last map[string]acked) {
	t.Helper()
	ctx := t.Context()
	for id, a := range last {
		r, err := s.Get(ctx, id)
		if err != nil {
			if Finished(a.status) {
				continue // pruned
			}
			t.Errorf("acknowledged run %s (%s): %v", id, a.status, err)
			continue
		}
		if len(r.Checkpoint) > 0 {
			var cp struct{ Run string }
			if err := json.Unmarshal(r.Checkpoint, &cp); err != nil || cp.Run != id {
				t.Errorf("run %s: checkpoint is not whole (%v, run %q)", id, err, cp.Run)
			}
		}
		if !strings.HasPrefix(string(r.Definition), "name: churn") || hashHex(r.Definition) != r.DefinitionHash {
			t.Errorf("run %s: definition %q", id, r.Definition)
		}
		switch {
		case Finished(a.status) || a.status == StatusInterrupted:
			if r.Status != a.status {
				t.Errorf("run %s: status %s, acknowledged %s", id, r.Status, a.status)
			}
		case r.Seq < a.seq:
			t.Errorf("run %s: pause %d, acknowledged %d", id, r.Seq, a.seq)
		}
	}
}

// TestSecondProcessIsLockedOut opens the file in a child while this process
// holds it: the child fails within the lock timeout, naming the file.
func TestSecondProcessIsLockedOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmcp", "state.db")
	openTest(t, path, nil)
	out, err := child(t, "open", path).Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	ms, msg, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	want := fmt.Sprintf("state file %s is in use by another vmcp process (open timed out after 1s)", path)
	if msg != want {
		t.Fatalf("child said %q; want %q", out, want)
	}
	if n, _ := strconv.Atoi(ms); n > 3000 {
		t.Fatalf("the child waited %d ms", n)
	}
	t.Logf("child: after %s ms: %s", ms, msg)
}
