package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmcp-dev/vmcp/state"
	"github.com/vmcp-dev/vmcp/state/postgres"
)

func newStateCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state migrate|copy",
		Short: "Manage the run store: migrate a PostgreSQL schema, copy runs from bbolt to PostgreSQL",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown state command %q: use migrate or copy", args[0])
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(newStateMigrateCmd(stdout), newStateCopyCmd(stdout))
	return cmd
}

func dsnFlag(cmd *cobra.Command, dsn *string) {
	cmd.Flags().StringVar(dsn, "dsn", os.Getenv("VMCP_STATE_DSN"), "PostgreSQL connection string (default $VMCP_STATE_DSN)")
}

func newStateMigrateCmd(stdout io.Writer) *cobra.Command {
	var dsn, schema string
	cmd := &cobra.Command{
		Use:   "migrate --dsn DSN [--schema NAME]",
		Short: "Create or upgrade vmcp's tables in a PostgreSQL schema (state.driver postgres)",
		Long: `migrate applies the migrations this vmcp has and the database lacks, each in
one transaction, under an advisory lock (replicas starting together migrate
once). vmcp serve also migrates at start; run this first when the database
user that serves may not create tables. A schema migrated by a newer vmcp is
refused.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				return usageErrorf("--dsn is required (or set VMCP_STATE_DSN)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			if err := postgres.Migrate(ctx, dsn, schema, false); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "schema %s is at version %d\n", schema, postgres.SchemaVersion())
			return nil
		},
	}
	dsnFlag(cmd, &dsn)
	cmd.Flags().StringVar(&schema, "schema", postgres.DefaultSchema, "PostgreSQL schema (state.postgres.schema)")
	return cmd
}

func newStateCopyCmd(stdout io.Writer) *cobra.Command {
	var from, to, schema string
	cmd := &cobra.Command{
		Use:   "copy --from bbolt:PATH --to postgres:DSN [--schema NAME]",
		Short: "Copy every run (and the resume-token key) from a bbolt file to PostgreSQL, verified by counts and checksums",
		Long: `copy reads every run of a bbolt state file (vmcp must be stopped: the file is
locked while it serves) and stores it unchanged in PostgreSQL: the run
documents byte for byte, checkpoints and workflow definitions. The token key
is copied too, so resume tokens already handed out still work. Runs already
in the database with the same contents are skipped, so an interrupted copy
can be run again. At the end both stores are read back and compared: run
counts and a SHA-256 over every run must be equal.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, ok := strings.CutPrefix(from, "bbolt:")
			if !ok || path == "" {
				return usageErrorf("--from must be bbolt:PATH, got %q", from)
			}
			dsn, ok := strings.CutPrefix(to, "postgres:")
			if !ok || dsn == "" {
				return usageErrorf("--to must be postgres:DSN, got %q", to)
			}
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			return copyState(cmd.Context(), stdout, path, dsn, schema)
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source: bbolt:PATH")
	cmd.Flags().StringVar(&to, "to", "", "destination: postgres:DSN")
	cmd.Flags().StringVar(&schema, "schema", postgres.DefaultSchema, "PostgreSQL schema (state.postgres.schema)")
	return cmd
}

// copyState copies every run from the bbolt file at path to PostgreSQL
// and verifies the copy.
func copyState(ctx context.Context, stdout io.Writer, path, dsn, schema string) error {
	start := time.Now()
	src, err := state.Open(path, &state.Options{LockTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, dsn, &postgres.Options{Schema: schema, SweepInterval: -1})
	if err != nil {
		return err
	}
	defer dst.Close()
	key, err := src.Key(ctx)
	if err != nil {
		return err
	}
	if err := dst.ImportKey(ctx, key); err != nil {
		return err
	}
	ids, err := allIDs(ctx, src)
	if err != nil {
		return err
	}
	copied, skipped := 0, 0
	for _, id := range ids {
		r, err := src.Get(ctx, id)
		if err != nil {
			return err
		}
		err = dst.Import(ctx, r)
		if errors.Is(err, state.ErrExists) {
			have, gerr := dst.Get(ctx, id)
			if gerr != nil {
				return gerr
			}
			if runSum(have) != runSum(r) {
				return fmt.Errorf("run %s is already in the database with other contents; not overwriting it", id)
			}
			skipped++
			continue
		}
		if err != nil {
			return err
		}
		copied++
	}
	// Verify: counts and one checksum over every run, read back from both.
	srcSum, srcN, err := storeSum(ctx, src, ids)
	if err != nil {
		return err
	}
	dstSum, dstN, err := storeSum(ctx, dst, ids)
	if err != nil {
		return err
	}
	total, err := dst.Count(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copied %d runs (%d already there) from %s to schema %s in %v\n", copied, skipped, path, schema, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "bbolt:    %d runs, sha256 %s\npostgres: %d runs, sha256 %s (%d runs in the schema)\n", srcN, srcSum, dstN, dstSum, total)
	if srcN != dstN || srcSum != dstSum {
		return errors.New("verification failed: the copy differs from the source")
	}
	fmt.Fprintln(stdout, "verified: counts and checksums are equal")
	return nil
}

// allIDs lists every run of a store.
func allIDs(ctx context.Context, s state.Driver) ([]string, error) {
	var ids []string
	f := state.Filter{Limit: state.MaxPageSize}
	for {
		page, next, err := s.List(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			ids = append(ids, r.ID)
		}
		if next == "" {
			return ids, nil
		}
		f.Cursor = next
	}
}

// runSum is a SHA-256 of a run as stored: document, checkpoint, definition.
// The checkpoint is the one Get returns: PostgreSQL reassembles it from
// the run row and its step rows (vmcp_steps) byte for byte, so the sum
// covers every step row too.
func runSum(r *state.Run) string {
	doc, _, err := state.EncodeDocument(r)
	if err != nil {
		return "unencodable: " + err.Error()
	}
	h := sha256.New()
	for _, part := range [][]byte{doc, r.Checkpoint, r.Definition} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// storeSum reads runs ids from s and returns one checksum over them (in id
// order) and how many were found.
func storeSum(ctx context.Context, s state.Driver, ids []string) (string, int, error) {
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	h := sha256.New()
	n := 0
	for _, id := range sorted {
		r, err := s.Get(ctx, id)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", 0, err
		}
		fmt.Fprintf(h, "%s %s\n", id, runSum(r))
		n++
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
