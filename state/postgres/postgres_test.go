package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
	"github.com/vmcp-dev/vmcp/state/statetest"
)

func TestMain(m *testing.M) {
	if dsn := os.Getenv("VMCP_PG_KILL_CHILD"); dsn != "" {
		os.Exit(killChild(dsn, os.Getenv("VMCP_PG_KILL_SCHEMA")))
	}
	statetest.PostgresMain(m)
}

// freshSchema returns options on a schema of the test's own, dropped at
// the end.
func freshSchema(t *testing.T) (string, *postgres.Options) {
	t.Helper()
	dsn := statetest.PostgresDSN(t)
	schema := statetest.SchemaName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Error(err)
		}
	})
	// StepRowsAbove -1: every checkpoint with steps goes to step rows, so
	// the small checkpoints of the tests exercise them (the default size
	// threshold: TestContractDefaultStepRows, TestStepRowsAboveThreshold).
	return dsn, &postgres.Options{Schema: schema, SweepInterval: -1, MaxConns: 4, StepRowsAbove: -1}
}

func open(t *testing.T, dsn string, o *postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), dsn, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestContract(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Opener {
		dsn, o := freshSchema(t)
		return func(t *testing.T) state.Driver { return open(t, dsn, o) }
	})
}

// The contract again with the default step-rows threshold: the tests'
// small checkpoints are stored whole, as vmcp stores them.
func TestContractDefaultStepRows(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Opener {
		dsn, o := freshSchema(t)
		o.StepRowsAbove = 0
		return func(t *testing.T) state.Driver { return open(t, dsn, o) }
	})
}
