package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
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
