#!/usr/bin/env bash
# `make bench`: measures the gateway against the mock provider following PERFORMANCE.md. It starts a
# separate platform instance ("bench", fresh databases), pins the gateway to CPU 0 from its start
# and everything else of this instance (the other services, NATS, the cluster's PostgreSQL, the
# mocks, the load generator) to CPU 1, runs e2e/cmd/bench, and writes
# .bench/<time>/results.{jsonl,md}. The instance is stopped at the end. It touches no process it
# did not start: it pins only the processes named by this instance's pid files (and the
# PostgreSQL postmaster named by the cluster's postmaster.pid, with its children), gives a
# PostgreSQL it found running its CPUs back and leaves it running.
#
# Environment: BENCH_STEP (default 20s), BENCH_RATES (default 100,500,1000,3000),
# BENCH_ROUNDS (default 10), BENCH_SAT_WORKERS (default 64), BENCH_TIMEOUT (bound of the
# measurements in whole minutes, default 12m; with the defaults they take about 7 minutes, with
# BENCH_STEP=5s BENCH_ROUNDS=3 about 3).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v taskset >/dev/null 2>&1 || apt_install util-linux
ncpu="$(nproc)"
((ncpu >= 2)) || die "make bench needs at least 2 CPUs (gateway on one, load on the other); this machine has ${ncpu}"

export MOAT_INSTANCE=bench
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export MOAT_CPUS_GATEWAY=0 MOAT_CPUS_IDENTITY=1 MOAT_CPUS_CONFIG=1 MOAT_CPUS_BILLING=1 MOAT_CPUS_AUDIT=1
export LOG_LEVEL=warn
MOAT_PPROF_GATEWAY="127.0.0.1:$(free_port 6060)"
export MOAT_PPROF_GATEWAY

# The cluster is shared by every instance of this checkout: one found running is someone else's,
# and stays up after the run.
pg_found_running=0
if pg_locate && pg_running; then
	pg_found_running=1
fi

# postmaster_alive PID succeeds when PID is this cluster's postmaster (guards against pid reuse).
postmaster_alive() {
	local pid=$1 cmd
	pid_alive "${pid}" "${PG_BIN}/postgres" || return 1
	cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline")" || return 1
	[[ " ${cmd} " == *" -D ${PG_DATA} "* ]]
}

# restore_pg_cpus gives the postmaster and its children (new backends inherit its affinity) the
# CPUs they had before the run, when the cluster outlives it; only those still on CPU 1 as set here.
pg_pid="" pg_mask=""
restore_pg_cpus() {
	[[ -n ${pg_pid} && -n ${pg_mask} ]] || return 0
	postmaster_alive "${pg_pid}" || return 0
	local pid
	for pid in "${pg_pid}" $(pgrep -P "${pg_pid}" || true); do
		[[ "$(taskset -cp "${pid}" 2>/dev/null | sed 's/.*: //')" == 1 ]] || continue
		taskset -p "${pg_mask}" "${pid}" >/dev/null 2>&1 || true
	done
}

slow_pid=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n ${slow_pid} ]] && pid_alive "${slow_pid}" "${MOAT_BIN}/mockprovider"; then
		stop_pids 10 mockprovider-slow "${slow_pid}"
	fi
	restore_pg_cpus
	MOAT_KEEP_PG="${pg_found_running}" "${MOAT_ROOT}/scripts/dev-down.sh" || rc=1
	exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MOAT_DB_RESET=1 "${MOAT_ROOT}/scripts/dev-up.sh"
go build -o "${MOAT_BIN}/" github.com/moat-ai/moat/e2e/cmd/bench

set -a
# shellcheck source=/dev/null
source "${MOAT_STATE}/platform.env"
# shellcheck source=/dev/null
source "${MOAT_STATE}/demo.env"
set +a
mock_credential="$(secret MOCK_PROVIDER_CREDENTIAL)"

# A second mock that answers after 50 ms, behind its own provider and route "slow-model".
slow_port="$(free_port 8190)"
MOCK_PROVIDER_CREDENTIAL="${mock_credential}" taskset -c 1 "${MOAT_BIN}/mockprovider" \
	-addr "127.0.0.1:${slow_port}" -model mock-model -delay 50ms >"${MOAT_LOGS}/mockprovider-slow.log" 2>&1 &
slow_pid=$!
api() {
	curl -fsS -o /dev/null -X "$1" "${E2E_GATEWAY_URL}/api/v1/$2" -H "Authorization: Bearer ${MOAT_ADMIN_KEY}" \
		-H 'Content-Type: application/json' -d "$3" || true
}
api POST "orgs/${MOAT_ORG}/providers?providerId=mock-slow" \
	"{\"type\":\"TYPE_OPENAI_COMPATIBLE\",\"baseUrl\":\"http://127.0.0.1:${slow_port}/v1\",\"credential\":\"${mock_credential}\"}"
api POST "orgs/${MOAT_ORG}/projects/${MOAT_PROJECT}/routes?routeId=slow-model" \
	"{\"model\":\"slow-model\",\"provider\":\"orgs/${MOAT_ORG}/providers/mock-slow\",\"upstreamModel\":\"mock-model\"}"

# Everything of this instance but the gateway goes to CPU 1, each process found by its pid file and
# checked against its executable: NATS, the mock, the other services (pinned from their start
# already), and PostgreSQL: the postmaster of the cluster (its postmaster.pid) and its children;
# backends forked later inherit its CPU.
# pidfile_pid FILE EXE prints the pid in FILE after checking that it runs EXE.
pidfile_pid() {
	local pid
	pid="$(cat "$1" 2>/dev/null || true)"
	pid_alive "${pid}" "$2" || die "$(rel "$1") names no running $(basename "$2") (pid '${pid}')"
	printf '%s\n' "${pid}"
}
pin_cpu1() {
	taskset -a -cp 1 "$2" >/dev/null || die "cannot pin $1 (pid $2) to CPU 1"
}
nats_pid="$(pidfile_pid "$(nats_pidfile)" "${MOAT_BIN}/nats-server")"
mock_pid="$(pidfile_pid "$(mock_pidfile)" "${MOAT_BIN}/mockprovider")"
pin_cpu1 nats "${nats_pid}"
pin_cpu1 mockprovider "${mock_pid}"
declare -A svc_pid=()
for svc in "${MOAT_SERVICES[@]}"; do
	svc_pid[${svc}]="$(pidfile_pid "$(service_pidfile "${svc}")" "${MOAT_BIN}/${svc}")"
	[[ ${svc} == gateway ]] || pin_cpu1 "${svc}" "${svc_pid[${svc}]}"
done
pg_locate || die "no PostgreSQL cluster in .moat/pg after dev-up"
postmaster="$(as_pg head -n 1 "${PG_DATA}/postmaster.pid" 2>/dev/null || true)"
postmaster_alive "${postmaster}" || die "${PG_DATA}/postmaster.pid names no running postmaster of this cluster (pid '${postmaster}')"
pg_mask="$(taskset -p "${postmaster}" | sed 's/.*: //')"
pg_pid=${postmaster}
pin_cpu1 postgres "${postmaster}"
for pid in $(pgrep -P "${postmaster}" || true); do
	taskset -cp 1 "${pid}" >/dev/null 2>&1 || true # a backend may have exited since pgrep
done
gateway_pid=${svc_pid[gateway]}
gateway_cpus="$(taskset -cp "${gateway_pid}" | sed 's/.*: //')"
[[ ${gateway_cpus} == 0 ]] || die "the gateway (pid ${gateway_pid}) runs on CPUs ${gateway_cpus}, not 0"
log "gateway pid ${gateway_pid} on CPU 0; NATS, mocks, services, PostgreSQL (postmaster ${postmaster}) and the load generator on CPU 1"

# The cluster is shared: other instances' processes or connections there count in PostgreSQL's CPU.
note=""
PG_PORT="$(pg_running_port)"
mapfile -t others < <(tagged_pids_other "${MOAT_STATE}")
foreign="$(psql_super -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
	AND pid <> pg_backend_pid() AND datname NOT LIKE '${MOAT_DB_PREFIX//_/\\_}%'" 2>/dev/null || echo '?')"
if ((${#others[@]} > 0)) || [[ ${foreign} != 0 ]]; then
	note="PostgreSQL is shared with other work during this run (${#others[@]} processes of other instances, ${foreign} connections to other databases at the start); its CPU includes theirs."
	warn "${note}"
fi
if ((pg_found_running)); then
	note+="${note:+ }PostgreSQL was running before the run (postmaster ${postmaster}); it was pinned to CPU 1 for the run and is left running."
fi
commit="$(git -C "${MOAT_ROOT}" rev-parse --short HEAD)"
if [[ -n "$(git -C "${MOAT_ROOT}" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
	commit+=" with uncommitted changes"
fi

# The keys travel in the environment (MOAT_API_KEY, MOCK_PROVIDER_CREDENTIAL), not on the command line.
# The measurements bound themselves (-max-duration); timeout is the backstop.
bench_timeout="${BENCH_TIMEOUT:-12m}"
[[ ${bench_timeout} =~ ^[1-9][0-9]*m$ ]] || die "BENCH_TIMEOUT must be whole minutes, e.g. 12m; got '${bench_timeout}'"
MOCK_PROVIDER_CREDENTIAL="${mock_credential}" BENCH_GATEWAY_GOMAXPROCS=1 timeout -k 30s "$((${bench_timeout%m} + 1))m" \
	taskset -c 1 "${MOAT_BIN}/bench" \
	-gateway "${MOAT_BASE_URL}" -direct "${MOAT_MOCK_URL}" -model demo-model -translated-model demo-claude \
	-slow-model slow-model -slow-direct "http://127.0.0.1:${slow_port}/v1" \
	-gateway-pid "${gateway_pid}" -mock-pid "${mock_pid}" -postgres-pid "${postmaster}" \
	-pids "nats=${nats_pid},billing=${svc_pid[billing]},audit=${svc_pid[audit]},identity=${svc_pid[identity]},config=${svc_pid[config]}" \
	-out "${MOAT_ROOT}/.bench" -max-duration "${bench_timeout}" \
	-step "${BENCH_STEP:-20s}" -rates "${BENCH_RATES:-100,500,1000,3000}" -rounds "${BENCH_ROUNDS:-10}" \
	-sat-workers "${BENCH_SAT_WORKERS:-64}" -pprof "http://${MOAT_PPROF_GATEWAY}" -note "${note}" \
	-features "API-key auth, routing (one target per route), usage events to JetStream, load shedding (MAX_IN_FLIGHT and USAGE_QUEUE_SIZE at their defaults), OpenAI-to-Anthropic translation on demo-claude; guardrails, budgets, rate limits and weighted targets do not exist yet, commit ${commit}"

latest="$(find "${MOAT_ROOT}/.bench" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)"
for scenario in rate-1000 rate-1000-translated; do
	prof="${latest}/gateway-cpu-${scenario}.pprof"
	[[ -f ${prof} ]] || continue
	{
		printf '\n### Gateway CPU profile, %s (top 25, flat)\n\n```\n' "${scenario}"
		go tool pprof -top -nodecount=25 "${MOAT_BIN}/gateway" "${prof}" 2>&1 || echo "(go tool pprof failed; the profile is in ${latest})"
		printf '```\n'
	} | tee -a "${latest}/results.md"
done
