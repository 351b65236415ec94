package postgres_test

import (
	"testing"

	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

// BenchmarkDriver is the driver benchmark (statetest.BenchTransitions) on
// PostgreSQL, to compare with the same benchmark on bbolt in state.
func BenchmarkDriver(b *testing.B) {
	dsn := statetest.PostgresDSN(b)
	o := &postgres.Options{Schema: statetest.SchemaName(b), SweepInterval: -1}
	s, err := postgres.Open(b.Context(), dsn, o)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_, _ = s.Pool().Exec(b.Context(), `DROP SCHEMA `+o.Schema+` CASCADE`)
		s.Close()
	}()
	statetest.BenchTransitions(b, s)
}
