#!/usr/bin/env bash
# `make bench`: measures the gateway against the mock provider following PERFORMANCE.md. It starts a
# separate platform instance ("bench", fresh databases), pins the gateway to CPU 0 from its start
# and everything else (the other services, NATS, PostgreSQL, the mocks, the load generator) to
# CPU 1, runs e2e/cmd/bench, and writes .bench/<time>/results.{jsonl,md}. The instance is stopped
# at the end.
#
# Environment: BENCH_STEP (default 20s), BENCH_RATES (default 100,500,1000,3000),
# BENCH_ROUNDS (default 10), BENCH_SAT_WORKERS (default 64).
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

slow_pid=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n ${slow_pid} ]] && kill "${slow_pid}" 2>/dev/null
	MOAT_KEEP_PG=0 "${MOAT_ROOT}/scripts/dev-down.sh" || rc=1
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

# Everything but the gateway goes to CPU 1: NATS, PostgreSQL, the mock.
for pid in $(cat "${MOAT_RUN}/nats.pid" "$(mock_pidfile)" 2>/dev/null) $(pgrep -f "postgres" || true); do
	taskset -a -cp 1 "${pid}" >/dev/null 2>&1 || true
done
gateway_pid="$(cat "$(service_pidfile gateway)")"
log "gateway pid ${gateway_pid} on CPU $(taskset -cp "${gateway_pid}" | sed 's/.*: //'); load generator on CPU 1"

# The keys travel in the environment (MOAT_API_KEY, MOCK_PROVIDER_CREDENTIAL), not on the command line.
MOCK_PROVIDER_CREDENTIAL="${mock_credential}" BENCH_GATEWAY_GOMAXPROCS=1 taskset -c 1 "${MOAT_BIN}/bench" \
	-gateway "${MOAT_BASE_URL}" -direct "${MOAT_MOCK_URL}" \
	-slow-model slow-model -slow-direct "http://127.0.0.1:${slow_port}/v1" \
	-gateway-pid "${gateway_pid}" -out "${MOAT_ROOT}/.bench" \
	-step "${BENCH_STEP:-20s}" -rates "${BENCH_RATES:-100,500,1000,3000}" -rounds "${BENCH_ROUNDS:-10}" \
	-sat-workers "${BENCH_SAT_WORKERS:-64}" -pprof "http://${MOAT_PPROF_GATEWAY}" \
	-features "API-key auth, routing, usage events to JetStream (guardrails, budgets and rate limits do not exist yet), commit $(git -C "${MOAT_ROOT}" rev-parse --short HEAD)"

latest="$(find "${MOAT_ROOT}/.bench" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)"
if [[ -f ${latest}/gateway-cpu-rate-1000.pprof ]]; then
	{
		printf '\n### Gateway CPU profile at 1000 req/s (top 25, flat)\n\n```\n'
		go tool pprof -top -nodecount=25 "${MOAT_BIN}/gateway" "${latest}/gateway-cpu-rate-1000.pprof" 2>&1 || echo "(go tool pprof failed; the profile is in ${latest})"
		printf '```\n'
	} | tee -a "${latest}/results.md"
fi
