package state_test

import (
	"path/filepath"
	"testing"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// BenchmarkDriver is the driver benchmark (statetest.BenchTransitions) on
// bbolt, to compare with the same benchmark in state/postgres.
func BenchmarkDriver(b *testing.B) {
	s, err := state.Open(filepath.Join(b.TempDir(), "state.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	statetest.BenchTransitions(b, s)
}
