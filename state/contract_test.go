package state_test

import (
	"path/filepath"
	"testing"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// TestContract runs the driver contract suite on the bbolt store: each
// Opener call opens the same file again (a new process).
func TestContract(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Opener {
		path := filepath.Join(t.TempDir(), "state.db")
		return func(t *testing.T) state.Driver {
			s, err := state.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}
