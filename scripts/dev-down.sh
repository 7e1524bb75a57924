#!/usr/bin/env bash
# Stops what dev-up.sh started: the services (SIGTERM, a grace period, then SIGKILL), NATS and
# PostgreSQL, and checks that none of their processes is left. Safe to run at any time.
#
# Usage: scripts/dev-down.sh [--purge]
#   --purge          also delete the local state: every instance under .moat, including the cluster
# Environment:
#   MOAT_INSTANCE    stop that instance instead of the default one (see lib.sh)
#   MOAT_KEEP_PG=1   leave PostgreSQL running (make test does, when it found it running)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case ${1:-} in
"") ;;
--purge) purge=1 ;;
*) die "usage: $0 [--purge]" ;;
esac

if ((purge)) && [[ -z ${MOAT_INSTANCE} && -d ${MOAT_DIR} ]]; then
	# Stop the other instances first; their state goes with .moat.
	for dir in "${MOAT_DIR}"/*/; do
		name="$(basename "${dir}")"
		[[ ${name} =~ ^[a-z][a-z0-9]*$ && -d ${dir}run ]] || continue
		MOAT_INSTANCE="${name}" MOAT_KEEP_PG=1 "${BASH_SOURCE[0]}"
	done
fi

services_stop
mock_stop
keycloak_stop
nats_stop

keep_pg=${MOAT_KEEP_PG:-0}
if [[ ${keep_pg} != 1 ]]; then
	mapfile -t others < <(tagged_pids_other "${MOAT_STATE}")
	if ((${#others[@]} > 0)); then
		log "another platform instance still uses PostgreSQL (${others[0]#* }); leaving PostgreSQL running"
		keep_pg=1
	fi
fi
if [[ ${keep_pg} != 1 ]]; then
	pg_stop
fi

# Nothing started for this instance may survive.
mapfile -t left < <(tagged_pids "${MOAT_STATE}")
mapfile -t left < <(live_pids "${left[@]}")
if ((${#left[@]} > 0)); then
	ps -o pid,args -p "$(
		IFS=,
		echo "${left[*]}"
	)" >&2 || true
	die "processes of this platform are still running after dev-down: ${left[*]}"
fi
if [[ ${keep_pg} != 1 ]] && pg_locate; then
	mapfile -t left < <(pg_leftover_pids)
	((${#left[@]} == 0)) || die "PostgreSQL processes still running after dev-down: ${left[*]}"
fi

if ((purge)); then
	if [[ -n ${MOAT_INSTANCE} ]]; then
		rm -rf "${MOAT_STATE}"
	elif [[ -e ${MOAT_DIR} || -L ${MOAT_DIR}/pg ]]; then
		if [[ ${keep_pg} == 1 ]]; then
			die "PostgreSQL is still running, so .moat is kept"
		fi
		if [[ -L ${MOAT_DIR}/pg ]]; then
			target="$(readlink -f "${MOAT_DIR}/pg" || true)"
			if [[ ${target} =~ ^/var/lib/moat/[0-9a-f]+/pg$ ]]; then
				rm -rf "$(dirname "${target}")"
			fi
		fi
		rm -rf "${MOAT_DIR}"
		log "deleted .moat (cluster, NATS store, logs, secrets)"
	fi
fi
log "stopped${MOAT_INSTANCE:+ (instance ${MOAT_INSTANCE})}"
