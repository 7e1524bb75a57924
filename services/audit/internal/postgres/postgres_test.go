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
	"github.com/moat-ai/moat/services/audit/internal/audit"
	"github.com/moat-ai/moat/services/audit/internal/postgres"
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

func record() audit.Record {
	return audit.Record{
		EventID: uuid.Must(uuid.NewV7()), Organization: "orgs/acme", Actor: "keys/k1", Action: "moat.x.v1.S.M",
		Outcome: audit.OutcomeAllowed, Status: "OK", EventTime: time.Now(), Producer: "moat/config",
	}
}

func insert(ctx context.Context, db pg.Beginner, r audit.Record) (bool, error) {
	var inserted bool
	err := pg.InTx(ctx, db, func(tx pgx.Tx) (err error) {
		inserted, err = postgres.InsertRecord(ctx, tx, r, audit.Envelope{Type: "moat.audit.v1.AuditEvent"})
		return err
	})
	return inserted, err
}

func TestInsertRecordKeepsTheFirstWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	r := record()
	for i, want := range []bool{true, false} {
		r.Actor = []string{"keys/first", "keys/second"}[i]
		if got, err := insert(ctx, pool, r); err != nil || got != want {
			t.Fatalf("InsertRecord #%d = %v, %v; want %v", i+1, got, err, want)
		}
	}
	var actor string
	if err := pool.QueryRow(ctx, `SELECT actor FROM audit_events WHERE event_id = $1`, r.EventID).Scan(&actor); err != nil || actor != "keys/first" {
		t.Errorf("stored actor = %q, %v; want the first write's", actor, err)
	}
	bad := record()
	bad.Outcome = "maybe"
	if _, err := insert(ctx, pool, bad); err == nil {
		t.Error("InsertRecord(outcome maybe) = nil, want the check constraint to refuse it")
	}
}

// TestRuntimeRoleCannotRewriteTheLog sets up the roles the README
// prescribes for a cluster (the service runs as a role granted SELECT and
// INSERT, not the owner) and checks that the log is then append-only.
func TestRuntimeRoleCannotRewriteTheLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	ident := pgx.Identifier{"audit_rt_" + hex.EncodeToString(b)}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE ROLE `+ident+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP OWNED BY `+ident)
		_, _ = pool.Exec(context.Background(), `DROP ROLE `+ident)
	})
	if _, err := pool.Exec(ctx, `GRANT SELECT, INSERT ON audit_events TO `+ident); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // the test ends with it
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident); err != nil {
		t.Fatal(err)
	}
	if ok, err := insert(ctx, tx, record()); err != nil || !ok {
		t.Fatalf("InsertRecord as the runtime role = %v, %v; want inserted", ok, err)
	}
	for _, sql := range []string{
		`UPDATE audit_events SET actor = 'someone else'`,
		`DELETE FROM audit_events`,
		`TRUNCATE audit_events`,
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
		if err := pool.QueryRow(ctx, `SELECT has_table_privilege('public', 'audit_events', $1)`, priv).Scan(&has); err != nil || has {
			t.Errorf("PUBLIC has %s on audit_events: %v, %v", priv, has, err)
		}
	}
}
