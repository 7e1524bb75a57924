#!/usr/bin/env bash
# `make migrate`: runs `<svc> migrate` for every service with a database (identity, config, billing,
# audit) against the local cluster, creating databases and roles first. PostgreSQL is left as it was
# found: started only for the duration when it was not running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_go
pg_start
if ((PG_STARTED)); then
	trap pg_stop EXIT
fi
pg_ensure_databases keep

log "building the services (make build)"
make -C "${MOAT_ROOT}" --no-print-directory build >&2 || die "make build failed (output above)"

# The services validate their whole environment even for migrate; give them the usual addresses.
service_ports_load
NATS_URL="nats://127.0.0.1:$(env_get "${MOAT_PORTS}" NATS_PORT)"
[[ ${NATS_URL} != *: ]] || NATS_URL="nats://127.0.0.1:${MOAT_DEFAULT_NATS_PORT}"
for svc in "${MOAT_DB_SERVICES[@]}"; do
	log "migrating ${svc}"
	service_exec "${svc}" migrate || die "${svc} migrate failed"
done
log "all migrations applied"
