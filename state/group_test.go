package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func openGroup(t *testing.T) *groupCommit {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return &groupCommit{db: db, max: 64}
}

func put(k string) func(*bbolt.Tx) error {
	return func(tx *bbolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }
}

func keys(t *testing.T, g *groupCommit) []string {
	t.Helper()
	var ks []string
	_ = g.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("b")).ForEach(func(k, _ []byte) error { ks = append(ks, string(k)); return nil })
	})
	return ks
}

// blockFirst starts a transition that holds the committer busy until
// release is closed, and returns once it is inside its commit.
func blockFirst(t *testing.T, g *groupCommit, errs chan<- error) (release chan struct{}) {
	t.Helper()
	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		errs <- g.do(func(tx *bbolt.Tx) error {
			select {
			case <-inside: // a second run (after a neighbour failed)
			default:
				close(inside)
			}
			<-release
			return put("first")(tx)
		})
	}()
	<-inside
	return release
}

// waitQueued waits until n transitions are queued behind the commit in
// flight.
func waitQueued(t *testing.T, g *groupCommit, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		q := len(g.pending)
		g.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transitions queued, want %d", q, n)
		}
	}
}

func TestGroupCommitLoneWriteCommitsAlone(t *testing.T) {
	g := openGroup(t)
	for i := range 3 {
		if err := g.do(put(fmt.Sprint("k", i))); err != nil {
			t.Fatal(err)
		}
	}
	if commits, calls := g.counts(); commits != 3 || calls != 3 {
		t.Fatalf("3 writes one after the other: %d commits for %d calls, want 3 and 3", commits, calls)
	}
	if got := strings.Join(keys(t, g), ","); got != "k0,k1,k2" {
		t.Fatalf("stored %s", got)
	}
}

func TestGroupCommitQueuedWritesShareOneCommit(t *testing.T) {
	g := openGroup(t)
	errs := make(chan error, 20)
	release := blockFirst(t, g, errs)
	const n = 10
	for i := range n {
		go func() { errs <- g.do(put(fmt.Sprintf("q%02d", i))) }()
	}
	waitQueued(t, g, n)
	close(release)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if commits, calls := g.counts(); commits != 2 || calls != n+1 {
		t.Fatalf("%d commits for %d calls, want 2 commits (the first, then the %d queued together) for %d", commits, calls, n, n+1)
	}
	if got := len(keys(t, g)); got != n+1 {
		t.Fatalf("%d keys stored, want %d", got, n+1)
	}
}

func TestGroupCommitBatchSizeIsCapped(t *testing.T) {
	g := openGroup(t)
	g.max = 4
	errs := make(chan error, 20)
	release := blockFirst(t, g, errs)
	const n = 10
	for i := range n {
		go func() { errs <- g.do(put(fmt.Sprintf("q%02d", i))) }()
	}
	waitQueued(t, g, n)
	close(release)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if commits, _ := g.counts(); commits != 1+3 { // 4 + 4 + 2
		t.Fatalf("%d commits, want 4 (the first, then batches of at most 4)", commits)
	}
}

func TestGroupCommitFailureStaysWithItsTransition(t *testing.T) {
	g := openGroup(t)
	errs := make(chan error, 20)
	release := blockFirst(t, g, errs)
	boom := errors.New("boom")
	var mu sync.Mutex
	got := map[string]error{}
	var wg sync.WaitGroup
	for _, k := range []string{"a", "bad", "b", "panics", "c"} {
		wg.Go(func() {
			err := g.do(func(tx *bbolt.Tx) error {
				if err := put(k)(tx); err != nil {
					return err
				}
				switch k {
				case "bad":
					return boom
				case "panics":
					panic("kaboom")
				}
				return nil
			})
			mu.Lock()
			got[k] = err
			mu.Unlock()
		})
	}
	waitQueued(t, g, 5)
	close(release)
	wg.Wait()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if got[k] != nil {
			t.Errorf("%s failed with its neighbour's error: %v", k, got[k])
		}
	}
	if !errors.Is(got["bad"], boom) {
		t.Errorf("bad: %v, want boom", got["bad"])
	}
	if got["panics"] == nil || !strings.Contains(got["panics"].Error(), "kaboom") {
		t.Errorf("panics: %v, want the panic as its error", got["panics"])
	}
	if ks := strings.Join(keys(t, g), ","); ks != "a,b,c,first" {
		t.Fatalf("stored %s, want a,b,c,first (nothing of the failed transitions)", ks)
	}
}

func TestGroupCommitClosedDatabase(t *testing.T) {
	g := openGroup(t)
	_ = g.db.Close()
	if err := g.do(put("x")); err == nil {
		t.Fatal("write to a closed database succeeded")
	}
}
