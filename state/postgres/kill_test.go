package postgres_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// killChild runs transitions until it is killed, printing each one after
// it returned (was acknowledged): "create ID", "checkpoint ID N", "pause
// ID", "claim ID", "finish ID".
func killChild(dsn, schema string) int {
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn, &postgres.Options{Schema: schema, SweepInterval: -1, LeaseTTL: time.Second, Heartbeat: 200 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	ack := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	for i := 0; ; i++ {
		r := statetest.NewRun("alice", "deploy")
		if err := s.Create(ctx, r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ack("create %s", r.ID)
		steps := []func() (string, error){
			func() (string, error) {
				return fmt.Sprintf("checkpoint %s %d", r.ID, i), s.Checkpoint(ctx, r.ID, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), []string{"call"})
			},
			func() (string, error) {
				_, err := s.Pause(ctx, r.ID, nil, state.Question{Step: "ok", Message: "ok?"})
				return "pause " + r.ID, err
			},
			func() (string, error) {
				_, err := s.Claim(ctx, r.ID, "ok", 1, "bob", json.RawMessage(`{"action":"accept"}`))
				return "claim " + r.ID, err
			},
			func() (string, error) {
				return "finish " + r.ID, s.Finish(ctx, r.ID, state.StatusCompleted, json.RawMessage(`{"i":`+fmt.Sprint(i)+`}`), "")
			},
		}
		for _, step := range steps[:1+i%4] { // leave runs at every stage
			what, err := step()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			ack("%s", what)
		}
	}
}

// SIGKILL a process in the middle of transitions: every acknowledged
// transition is in the database, and the runs it was executing are taken
// over (interrupted) once its lease expires — none lost.
func TestKillMidTransition(t *testing.T) {
	dsn, o := freshSchema(t)
	if err := postgres.Migrate(t.Context(), dsn, o.Schema, false); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "VMCP_PG_KILL_CHILD="+dsn, "VMCP_PG_KILL_SCHEMA="+o.Schema)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		last := map[string]string{} // run id → last acknowledged transition
		var order []string
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			if _, ok := last[f[1]]; !ok {
				order = append(order, f[1])
			}
			last[f[1]] = f[0]
			if n++; n == 150+round*37 {
				_ = cmd.Process.Kill()
			}
		}
		_ = cmd.Wait()
		if n < 150 {
			t.Fatalf("round %d: the child acknowledged %d transitions and stopped: %s", round, n, stderr.String())
		}
		s := replica(t, dsn, *o)
		ctx := t.Context()
		running := 0
		for _, id := range order {
			r, err := s.Get(ctx, id)
			if err != nil {
				t.Fatalf("round %d: acknowledged run %s: %v", round, id, err)
			}
			k := map[string]int{}
			for _, ev := range r.History {
				k[ev.Kind]++
			}
			ok := true
			switch last[id] {
			case "checkpoint":
				ok = len(r.Checkpoint) > 0
			case "pause":
				ok = k[state.EventPaused] == 1
			case "claim":
				ok = k[state.EventAnswered] == 1
			case "finish":
				ok = r.Status == state.StatusCompleted
			}
			if !ok {
				t.Fatalf("round %d: run %s: %s was acknowledged, but the run is %s with history %v", round, id, last[id], r.Status, k)
			}
			if r.Status == state.StatusRunning {
				running++
			}
		}
		// The dead child's lease (1s) expires; a sweep interrupts the runs
		// it was executing: every run acknowledged as running, except the
		// last one if its next transition (a pause, a finish) committed
		// unacknowledged, plus at most the one run whose create or claim
		// committed unacknowledged when the kill came.
		time.Sleep(1500 * time.Millisecond)
		got, err := s.Recover(ctx)
		if err != nil || len(got) < running-1 || len(got) > running+1 {
			t.Fatalf("round %d: %d runs interrupted after the lease, %v; %d were running", round, len(got), err, running)
		}
		for _, id := range order[:len(order)-1] {
			r, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if ran := last[id] == "create" || last[id] == "checkpoint" || last[id] == "claim"; ran != (r.Status == state.StatusInterrupted) {
				t.Fatalf("round %d: run %s, last acknowledged %s, is %s after the takeover", round, id, last[id], r.Status)
			}
		}
		t.Logf("round %d: %d transitions acknowledged, %d runs, %d taken over", round, n, len(order), running)
	}
}
