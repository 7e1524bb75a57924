// Package postgres is the billing service's PostgreSQL adapter: its schema,
// embedded as goose migrations, and the ledger's writes (inside the
// projector's transaction) and reads (for the admin API). Queries are
// hand-written pgx; rows never leave this package unmapped.
package postgres

import (
	"embed"
	"io/fs"

	"github.com/moat-ai/moat/libs/pg"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the billing schema, applied by the migrate subcommand.
var Migrations = func() pg.Migrations {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return pg.Migrations{Name: "billing", FS: sub}
}()
