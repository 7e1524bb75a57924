#!/usr/bin/env bash
# `make run`: starts the platform (dev-up.sh), then stays in the foreground until Ctrl-C or SIGTERM,
# or until a service dies, and stops everything (dev-down.sh). Data in .moat survives, so the next
# run starts where this one left off.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_requested=0
trap 'stop_requested=1' INT TERM

down() {
	trap '' INT TERM
	"${MOAT_ROOT}/scripts/dev-down.sh" || true
}

if ! "${MOAT_ROOT}/scripts/dev-up.sh"; then
	if ((stop_requested)); then
		log "interrupted during startup; stopping"
	else
		log "startup failed; stopping what was started"
	fi
	down
	exit 1
fi

# watch exits 1 when a service dies. It runs in a child so that this shell only sits in `wait`
# when a signal arrives: traps then run promptly and never interrupt a command substitution.
watch() {
	trap - INT TERM
	while :; do
		sleep 1
		for svc in "${MOAT_SERVICES[@]}"; do
			if ! service_running "${svc}"; then
				log "${svc} exited unexpectedly; last lines of $(rel "${MOAT_LOGS}/${svc}.log"):"
				tail -n 30 "${MOAT_LOGS}/${svc}.log" >&2 || true
				exit 1
			fi
		done
	done
}

service_ports_load
log "platform running; press Ctrl-C to stop it"
watch &
watcher=$!
wait "${watcher}" || true
rc=0
if ((stop_requested)); then
	kill "${watcher}" 2>/dev/null || true
	wait "${watcher}" 2>/dev/null || true
	log "stopping the platform"
else
	rc=1
	log "stopping the platform after a service failure"
fi
down
exit "${rc}"
