#!/usr/bin/env bash
# Starts the whole platform in the background and returns once every service is ready:
# PostgreSQL and NATS (installed when missing), the service databases and roles, fresh binaries
# (make build), migrations, then gateway, identity, config, billing and audit. Writes
# .moat/platform.env and prints where everything listens. Re-running it restarts the services and
# keeps the data; scripts/dev-down.sh stops everything.
#
# Environment:
#   MOAT_INSTANCE       run a separate platform (own ports, NATS, databases <instance>_<svc>); see lib.sh
#   MOAT_READY_TIMEOUT  seconds to wait for every /readyz to answer 200 (default 120)
#   MOAT_DB_RESET=1     drop the instance's databases first (make test does this for e2e)
#   MOAT_KEYCLOAK=1     also start Keycloak (database keycloak, or <instance>_keycloak, kept by
#                       MOAT_DB_RESET: the realm converges at each start); identity sets up realm
#                       "moat" (console client, service clients, platform admin), every service
#                       accepts its access tokens (MOAT_OIDC_ISSUER) and the demo env file gets the
#                       OIDC settings
#   LOG_LEVEL, DRAIN_TIMEOUT  passed to the services (default info, 10s)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_go
ensure_postgres_installed
ensure_tool nats-server
mkdir -p "${MOAT_RUN}" "${MOAT_LOGS}"

pg_start
if [[ ${MOAT_DB_RESET:-} == 1 ]]; then
	pg_ensure_databases reset
else
	pg_ensure_databases keep
fi

log "building the services (make build)"
make -C "${MOAT_ROOT}" --no-print-directory build >&2 || die "make build failed (output above)"

# Stop what a previous run left, so its ports count as ours and the new binaries are the ones running.
services_stop
nats_start
mock_start
service_ports_pick
if [[ ${MOAT_KEYCLOAK:-0} == 1 ]]; then
	keycloak_start
fi

for svc in "${MOAT_DB_SERVICES[@]}"; do
	migrate_log="${MOAT_LOGS}/${svc}-migrate.log"
	log "migrating ${svc} (log: $(rel "${migrate_log}"))"
	if ! service_exec "${svc}" migrate >"${migrate_log}" 2>&1; then
		tail -n 30 "${migrate_log}" >&2
		die "${svc} migrate failed (log tail above, full log in $(rel "${migrate_log}"))"
	fi
done

for svc in "${MOAT_SERVICES[@]}"; do
	log "starting ${svc} (HTTP $(service_http_addr "${svc}"), gRPC $(service_grpc_addr "${svc}"))"
	service_start "${svc}"
done

# fail_service SVC REASON reports a service that did not come up, with the tail of its log.
fail_service() {
	local svc=$1 reason=$2 logfile="${MOAT_LOGS}/$1.log"
	{
		echo "----- last 40 lines of $(rel "${logfile}") -----"
		tail -n 40 "${logfile}" 2>/dev/null || echo "(no log)"
		echo "-----"
	} >&2
	log "the platform is partly up; ${MOAT_INSTANCE:+MOAT_INSTANCE=${MOAT_INSTANCE} }make dev-down stops it"
	die "${svc}: ${reason}"
}

timeout_s="${MOAT_READY_TIMEOUT:-120}"
deadline=$((SECONDS + timeout_s))
pending=("${MOAT_SERVICES[@]}")
declare -A last_status=()
log "waiting up to ${timeout_s}s for every /readyz to answer 200"
while ((${#pending[@]} > 0)); do
	still=()
	for svc in "${pending[@]}"; do
		if ! service_running "${svc}"; then
			fail_service "${svc}" "exited during startup"
		fi
		last_status[${svc}]="$(http_status "$(service_http_addr "${svc}")" /readyz)"
		if [[ ${last_status[${svc}]} == 200 ]]; then
			log "${svc} is ready"
		else
			still+=("${svc}")
		fi
	done
	pending=("${still[@]}")
	((${#pending[@]} > 0)) || break
	if ((SECONDS >= deadline)); then
		for svc in "${pending[@]}"; do
			log "${svc}: GET http://$(service_http_addr "${svc}")/readyz answered ${last_status[${svc}]} (000 = no answer)"
		done
		fail_service "${pending[0]}" "not ready after ${timeout_s}s (not ready: ${pending[*]})"
	fi
	sleep 0.5
done

# The demo tenant: organization, project, the mock as provider, route demo-model and a project key,
# created through the admin API with the platform-admin key identity wrote on its first start.
log "bootstrapping the demo tenant (log: $(rel "${MOAT_LOGS}/demo.log"))"
if ! MOCK_PROVIDER_CREDENTIAL="$(secret MOCK_PROVIDER_CREDENTIAL)" "${MOAT_BIN}/demo" \
	-config "$(service_grpc_addr config)" -identity "$(service_grpc_addr identity)" \
	-admin-key-file "${MOAT_STATE}/admin.key" -gateway "http://$(service_http_addr gateway)" \
	-mock-url "http://127.0.0.1:${MOCK_PORT}/v1" -out "${MOAT_STATE}/demo.env" >"${MOAT_LOGS}/demo.log" 2>&1; then
	cat "${MOAT_LOGS}/demo.log" >&2
	die "the demo bootstrap failed (output above)"
fi

if [[ ${MOAT_KEYCLOAK:-0} == 1 ]]; then
	# identity sets the realm up at start; sign-in works once its discovery document answers.
	issuer="$(keycloak_issuer)"
	deadline=$((SECONDS + 120))
	until [[ $(http_status "127.0.0.1:${KEYCLOAK_PORT}" /realms/moat/.well-known/openid-configuration) == 200 ]]; do
		((SECONDS < deadline)) || fail_service identity "did not set up the Keycloak realm within 120s"
		sleep 0.5
	done
	{
		echo "MOAT_OIDC_ISSUER=${issuer}"
		echo "MOAT_OIDC_CLIENT_ID=moat-console"
		echo "MOAT_OIDC_REDIRECT_URI=$(console_redirect_uri)"
		echo "MOAT_ADMIN_USER=admin"
		echo "MOAT_ADMIN_PASSWORD=$(secret MOAT_ADMIN_PASSWORD)"
	} >>"${MOAT_STATE}/demo.env"
	log "Keycloak realm moat is ready (issuer ${issuer})"
fi

# platform.env: what clients and the e2e suite need. It holds local passwords, so mode 0600.
tmp="${MOAT_PLATFORM_ENV}.tmp"
(
	umask 077
	{
		echo "# Written by scripts/dev-up.sh: where the local platform${MOAT_INSTANCE:+ (instance ${MOAT_INSTANCE})} listens."
		echo "# Load with: set -a; . $(rel "${MOAT_PLATFORM_ENV}"); set +a"
		echo "E2E_GATEWAY_URL=http://$(service_http_addr gateway)"
		for svc in "${MOAT_SERVICES[@]}"; do
			echo "MOAT_$(upper "${svc}")_HTTP=$(service_http_addr "${svc}")"
			echo "MOAT_$(upper "${svc}")_GRPC=$(service_grpc_addr "${svc}")"
		done
		for svc in "${MOAT_DB_SERVICES[@]}"; do
			echo "MOAT_$(upper "${svc}")_DATABASE_URL=$(pg_service_url "${svc}")"
		done
		echo "MOAT_POSTGRES_URL=$(pg_superuser_url)"
		echo "NATS_URL=${NATS_URL}"
		echo "MOAT_MOCK_URL=http://127.0.0.1:${MOCK_PORT}/v1"
		echo "MOAT_DEMO_ENV=${MOAT_STATE}/demo.env"
		echo "MOAT_NATS_MONITOR=127.0.0.1:${NATS_MONITOR_PORT}"
	} >"${tmp}"
)
mv -f "${tmp}" "${MOAT_PLATFORM_ENV}"

{
	echo
	echo "Moat platform is up${MOAT_INSTANCE:+ (instance ${MOAT_INSTANCE})}:"
	printf '  %-10s %-22s %-22s %s\n' SERVICE HTTP GRPC LOG
	for svc in "${MOAT_SERVICES[@]}"; do
		printf '  %-10s %-22s %-22s %s\n' "${svc}" "$(service_http_addr "${svc}")" "$(service_grpc_addr "${svc}")" \
			"$(rel "${MOAT_LOGS}/${svc}.log")"
	done
	printf '  %-10s %-22s %s\n' postgres "127.0.0.1:${PG_PORT}" \
		"databases: ${MOAT_DB_SERVICES[*]/#/${MOAT_DB_PREFIX}}"
	printf '  %-10s %-22s %s\n' nats "127.0.0.1:${NATS_PORT}" "monitor: http://127.0.0.1:${NATS_MONITOR_PORT}"
	printf '  %-10s %-22s %s\n' mock "127.0.0.1:${MOCK_PORT}" "the demo's model provider (OpenAI and Anthropic wire formats)"
	if [[ ${MOAT_KEYCLOAK:-0} == 1 ]]; then
		printf '  %-10s %-22s %s\n' keycloak "127.0.0.1:${KEYCLOAK_PORT}" "realm moat; sign in as admin (password in the demo env file)"
	fi
	echo
	echo "  Gateway:   http://$(service_http_addr gateway)"
	echo "  Demo:      $(rel "${MOAT_STATE}/demo.env") (MOAT_BASE_URL, MOAT_API_KEY, MOAT_ADMIN_KEY, MOAT_ORG, MOAT_PROJECT)"
	echo
	echo "  Try it:"
	echo "    set -a; . $(rel "${MOAT_STATE}/demo.env"); set +a"
	echo "    curl -s \"\$MOAT_BASE_URL/chat/completions\" -H \"Authorization: Bearer \$MOAT_API_KEY\" \\"
	echo "      -H 'Content-Type: application/json' -d '{\"model\":\"demo-model\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"
	echo "    # the same OpenAI request, translated for a provider that speaks Anthropic's format:"
	echo "    curl -s \"\$MOAT_BASE_URL/chat/completions\" -H \"Authorization: Bearer \$MOAT_API_KEY\" \\"
	echo "      -H 'Content-Type: application/json' -d '{\"model\":\"demo-claude\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"
	echo "    # Anthropic's Messages API, native to demo-claude and translated for demo-model:"
	echo "    curl -s \"\$MOAT_BASE_URL/messages\" -H \"x-api-key: \$MOAT_API_KEY\" -H 'anthropic-version: 2023-06-01' \\"
	echo "      -H 'Content-Type: application/json' -d '{\"model\":\"demo-claude\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"
	echo
	echo "  Addresses: $(rel "${MOAT_PLATFORM_ENV}")   Credentials: $(rel "${MOAT_SECRETS}")"
	echo "  Stop with: ${MOAT_INSTANCE:+MOAT_INSTANCE=${MOAT_INSTANCE} }make dev-down"
	echo
}
