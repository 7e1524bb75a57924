package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/services/billing/internal/billing"
	"github.com/moat-ai/moat/services/billing/internal/postgres"
)

func TestMigrationsGoDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t)
	sets := []pg.Migrations{events.Migrations, postgres.Migrations}
	for i, step := range []func(context.Context, *pgxpool.Pool, ...pg.Migrations) error{pg.Migrate, pg.MigrateDown, pg.Migrate} {
		if err := step(ctx, pool, sets...); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := pg.CheckMigrated(ctx, pool, sets...); err != nil {
		t.Fatal(err)
	}
}

func entry() billing.Entry {
	return billing.Entry{
		EventID: uuid.Must(uuid.NewV7()), Organization: "orgs/acme", Project: "orgs/acme/projects/web", KeyID: "k1",
		Model: "chat", UpstreamModel: "mock-model", InputTokens: 1, OutputTokens: 2, CostMicros: 5, Currency: "USD",
		Priced: true, PriceVersion: "v1", RequestTime: time.Now(),
	}
}

// Every token kind round-trips through the ledger; reasoning beyond the
// output it is part of is refused by the schema as well.
func TestEntryTokenKinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	e := entry()
	e.CacheReadInputTokens, e.CacheWriteInputTokens, e.OutputTokens, e.ReasoningTokens, e.UsageEstimated = 30, 4, 20, 15, true
	bad := entry()
	bad.ReasoningTokens = bad.OutputTokens + 1
	for _, tt := range []struct {
		e    billing.Entry
		want string // "" for success, else the constraint
	}{{e, ""}, {bad, "ledger_entries_reasoning_in_output"}} {
		err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
			_, err := postgres.InsertEntry(ctx, tx, tt.e)
			return err
		})
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("InsertEntry(%+v) = %v, want %q", tt.e, err, tt.want)
		}
	}
	s := postgres.NewStore(pool)
	got, err := s.ListEntries(ctx, billing.Scope{Organization: "orgs/acme"}, nil, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("ListEntries = %v, %v; want one entry", got, err)
	}
	if g := got[0]; g.InputTokens != 1 || g.CacheReadInputTokens != 30 || g.CacheWriteInputTokens != 4 || g.OutputTokens != 20 || g.ReasoningTokens != 15 || !g.UsageEstimated {
		t.Errorf("ListEntries = %+v, want every token kind as inserted", g)
	}
	totals, err := s.Totals(ctx, billing.Scope{Organization: "orgs/acme"})
	want := billing.Totals{EntryCount: 1, InputTokens: 1, CacheReadInputTokens: 30, CacheWriteInputTokens: 4, OutputTokens: 20,
		ReasoningTokens: 15, CostMicros: 5, Currency: "USD", EstimatedCount: 1}
	if err != nil || totals != want {
		t.Errorf("Totals = %+v, %v; want %+v", totals, err, want)
	}
}

// Migration 00003 keeps the entries an older release recorded and gives
// them the defaults that say what they meant: no cache, no reasoning,
// reported usage.
func TestMigrationTokenKindsKeepsOldEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	older := fstest.MapFS{}
	names, err := fs.Glob(postgres.Migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n < "00003" {
			b, err := fs.ReadFile(postgres.Migrations.FS, n)
			if err != nil {
				t.Fatal(err)
			}
			older[n] = &fstest.MapFile{Data: b}
		}
	}
	pool, _ := pgtest.NewDatabase(t, events.Migrations, pg.Migrations{Name: postgres.Migrations.Name, FS: older})
	if _, err := pool.Exec(ctx, `
		INSERT INTO ledger_entries (event_id, organization, project, key_id, model, upstream_model,
		                            input_tokens, output_tokens, cost_micros, priced, occurred_at)
		VALUES ('0190b0a4-7c2e-7000-8000-000000000001', 'orgs/acme', 'orgs/acme/projects/web', 'k1', 'chat', 'gpt-4o',
		        1000, 500, 7500, true, now())`); err != nil {
		t.Fatalf("seed the old schema: %v", err)
	}
	if err := pg.Migrate(ctx, pool, events.Migrations, postgres.Migrations); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	got, err := postgres.NewStore(pool).ListEntries(ctx, billing.Scope{Organization: "orgs/acme"}, nil, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("ListEntries = %v, %v; want the old entry", got, err)
	}
	if g := got[0]; g.InputTokens != 1000 || g.OutputTokens != 500 || g.CostMicros != 7500 ||
		g.CacheReadInputTokens != 0 || g.CacheWriteInputTokens != 0 || g.ReasoningTokens != 0 || g.UsageEstimated {
		t.Errorf("old entry after the migration = %+v, want it unchanged with zero cache and reasoning counts", g)
	}
}

func TestInsertEntryKeepsTheFirstWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	e := entry()
	for i, want := range []bool{true, false} {
		e.CostMicros = int64(5 + i)
		var got bool
		err := pg.InTx(ctx, pool, func(tx pgx.Tx) (err error) {
			got, err = postgres.InsertEntry(ctx, tx, e)
			return err
		})
		if err != nil || got != want {
			t.Fatalf("InsertEntry #%d = %v, %v; want %v", i+1, got, err, want)
		}
	}
	var cost int64
	if err := pool.QueryRow(ctx, `SELECT cost_micros FROM ledger_entries WHERE event_id = $1`, e.EventID).Scan(&cost); err != nil || cost != 5 {
		t.Errorf("stored cost = %d, %v; want the first write's 5", cost, err)
	}
	unpriced := entry()
	unpriced.Priced = false
	err := pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := postgres.InsertEntry(ctx, tx, unpriced)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "ledger_entries_unpriced_is_free") {
		t.Errorf("InsertEntry(unpriced with a cost) = %v, want the check constraint to refuse it", err)
	}
}

// TestRuntimeRoleCannotRewriteTheLedger sets up the roles the README
// prescribes for a cluster (the service runs as a role granted SELECT and
// INSERT, not the owner) and checks that the ledger is then append-only.
func TestRuntimeRoleCannotRewriteTheLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "billing_rt_" + hex.EncodeToString(b)
	ident := pgx.Identifier{role}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE ROLE `+ident+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP OWNED BY `+ident)
		_, _ = pool.Exec(context.Background(), `DROP ROLE `+ident)
	})
	if _, err := pool.Exec(ctx, `GRANT SELECT, INSERT ON ledger_entries TO `+ident); err != nil {
		t.Fatal(err)
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	e := entry()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // the test ends with it
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident); err != nil {
		t.Fatal(err)
	}
	if ok, err := postgres.InsertEntry(ctx, tx, e); err != nil || !ok {
		t.Fatalf("InsertEntry as the runtime role = %v, %v; want inserted", ok, err)
	}
	for _, sql := range []string{
		`UPDATE ledger_entries SET cost_micros = 0`,
		`DELETE FROM ledger_entries`,
		`TRUNCATE ledger_entries`,
	} {
		if _, err := tx.Exec(ctx, `SAVEPOINT s`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s as the runtime role = %v, want permission denied", sql, err)
		}
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`); err != nil {
			t.Fatal(err)
		}
	}
	for _, priv := range []string{"UPDATE", "DELETE", "TRUNCATE"} {
		var has bool
		if err := pool.QueryRow(ctx, `SELECT has_table_privilege('public', 'ledger_entries', $1)`, priv).Scan(&has); err != nil || has {
			t.Errorf("PUBLIC has %s on ledger_entries: %v, %v", priv, has, err)
		}
	}
}
