// Package postgres is the identity service's PostgreSQL adapter: its schema,
// embedded as goose migrations, and (as the service grows) its store.
package postgres

import (
	"embed"
	"io/fs"

	"github.com/moat-ai/moat/libs/pg"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the identity schema, applied by the migrate subcommand.
var Migrations = func() pg.Migrations {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return pg.Migrations{Name: "identity", FS: sub}
}()
