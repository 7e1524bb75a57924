#!/usr/bin/env bash
# `make test` (and `make ci`, which CI runs): every test against real dependencies that this
# script provides, installing them when missing. Nothing is skipped for want of a dependency: a
# missing one fails the run with its name.
#
# Usage: scripts/test.sh [all|integration|e2e]
#   integration  all Go tests of every module (-race -shuffle=on -count=1) with TEST_DATABASE_URL
#   e2e          a separate platform instance (MOAT_INSTANCE=e2e, fresh e2e_* databases and NATS
#                store, its own Keycloak) and the black-box suite in e2e/ against it
#   all          integration, then make lint, check-modules, check-generated, then e2e (default)
#
# PostgreSQL is the private cluster of scripts/lib.sh. When it is already running (make run in
# another terminal), it is reused and left running; otherwise it is stopped at the end.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

phase=${1:-all}
case ${phase} in
all | integration | e2e) ;;
*) die "usage: $0 [all|integration|e2e]" ;;
esac

TEST_FLAGS=(-race -shuffle=on -count=1)
E2E_INSTANCE=e2e
E2E_STATE="${MOAT_DIR}/${E2E_INSTANCE}"
e2e_started=0

section() {
	printf '\n==> %s\n' "$*" >&2
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((e2e_started)); then
		MOAT_INSTANCE="${E2E_INSTANCE}" MOAT_KEEP_PG=1 "${MOAT_ROOT}/scripts/dev-down.sh" || rc=1
	fi
	if ((!${keycloak_was_running:-1})); then
		keycloak_stop || rc=1
	fi
	if ((${PG_STARTED:-0})); then
		pg_stop || rc=1
	fi
	exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require_go
command -v gcc >/dev/null 2>&1 || die "gcc is missing: go test -race needs cgo and a C compiler (apt-get install -y gcc libc6-dev)"
command -v git >/dev/null 2>&1 || die "git is missing (apt-get install -y git)"
cd "${MOAT_ROOT}"

section "tools"
make tools

section "PostgreSQL"
pg_start
if ((PG_STARTED)); then
	log "PostgreSQL started for this run; it is stopped at the end"
else
	log "PostgreSQL was already running; reusing it and leaving it running"
fi
TEST_DATABASE_URL="$(pg_superuser_url)"
export TEST_DATABASE_URL

# The Go tests' Keycloak is the default instance's (TEST_KEYCLOAK_*): reused when make run has it
# up, else started for the tests and stopped as soon as they are done. The e2e platform runs its own.
test_keycloak_start() {
	section "Keycloak"
	keycloak_was_running=0
	keycloak_running && keycloak_was_running=1
	keycloak_start
	TEST_KEYCLOAK_URL="http://127.0.0.1:${KEYCLOAK_PORT}"
	TEST_KEYCLOAK_ADMIN_USER="admin"
	TEST_KEYCLOAK_ADMIN_PASSWORD="$(secret KEYCLOAK_ADMIN_PASSWORD)"
	export TEST_KEYCLOAK_URL TEST_KEYCLOAK_ADMIN_USER TEST_KEYCLOAK_ADMIN_PASSWORD
}

test_keycloak_stop() {
	if ((!${keycloak_was_running:-1})); then
		section "stopping Keycloak (the Go tests are done with it)"
		keycloak_stop
		keycloak_was_running=1
	fi
}

run_go_tests() {
	local pkgs
	pkgs="$(go list -m -f '{{.Path}}/...')" || die "go list -m failed: every module in go.work must exist"
	test_keycloak_start
	section "go test ${TEST_FLAGS[*]} (every module, TEST_DATABASE_URL and TEST_KEYCLOAK_URL set)"
	# shellcheck disable=SC2086 # one pattern per module
	go test "${TEST_FLAGS[@]}" ${pkgs}
	test_keycloak_stop
}

# scan_secrets fails when a secret of the e2e run appears where none may (RELIABILITY.md scenario 17):
# the services' logs, the JetStream store (every event published) and a dump of every service
# database. It looks for any full API key (moat_ and 43 characters; the database keeps only HMACs
# and 12-character prefixes) and for the literal shared secrets and provider credential.
scan_secrets() {
	section "e2e: scanning logs, events and databases for secrets"
	local dump="${E2E_STATE}/scan" svc hits=0 value name
	mkdir -p "${dump}"
	for svc in "${MOAT_DB_SERVICES[@]}"; do
		"$(pg_find_bindir)/pg_dump" --data-only "$(pg_url postgres \
			"$(secret PG_SUPERUSER_PASSWORD)" "${E2E_INSTANCE}_${svc}")" >"${dump}/${svc}.sql" ||
			die "pg_dump of ${E2E_INSTANCE}_${svc} failed"
	done
	local places=("${E2E_STATE}/logs" "${E2E_STATE}/nats" "${dump}")
	if grep -rEaqo 'moat_[A-Za-z0-9_-]{43}' "${places[@]}"; then
		grep -rEalo 'moat_[A-Za-z0-9_-]{43}' "${places[@]}" >&2
		log "a full API key appears in the files above"
		hits=1
	fi
	# Access tokens are credentials too: no JWT may be logged, published or stored.
	local jwt='eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}'
	if grep -rEaq "${jwt}" "${places[@]}"; then
		grep -rEal "${jwt}" "${places[@]}" >&2
		log "an access token (JWT) appears in the files above"
		hits=1
	fi
	for name in MOCK_PROVIDER_CREDENTIAL MOAT_INTERNAL_TOKEN MOAT_KEY_SECRET MOAT_KEK_LOCAL1 MOAT_ADMIN_PASSWORD \
		KEYCLOAK_ADMIN_PASSWORD; do
		value="$(env_get "${MOAT_SECRETS}" "${name}")"
		[[ -n ${value} ]] || die "secret ${name} is missing from $(rel "${MOAT_SECRETS}")"
		if grep -rFaq -- "${value}" "${places[@]}"; then
			grep -rFal -- "${value}" "${places[@]}" >&2
			log "the value of ${name} appears in the files above"
			hits=1
		fi
	done
	rm -rf "${dump}"
	((hits == 0)) || die "secrets leaked into logs, events or databases"
	log "no API key, access token, credential, password or shared secret in logs, events or databases"
}

run_e2e() {
	section "e2e: platform instance '${E2E_INSTANCE}'"
	# Start from nothing: empty service databases (MOAT_DB_RESET) and a fresh NATS store. Keycloak
	# (MOAT_KEYCLOAK) is the instance's own, on database e2e_keycloak and ports of its own; its realm
	# converges at identity's start, and every service accepts the realm's access tokens.
	MOAT_INSTANCE="${E2E_INSTANCE}" MOAT_KEEP_PG=1 "${MOAT_ROOT}/scripts/dev-down.sh"
	rm -rf "${E2E_STATE}"
	e2e_started=1
	MOAT_INSTANCE="${E2E_INSTANCE}" MOAT_DB_RESET=1 MOAT_KEYCLOAK=1 "${MOAT_ROOT}/scripts/dev-up.sh"

	section "go test -tags e2e (black-box, against ${E2E_STATE#"${MOAT_ROOT}/"}/platform.env)"
	(
		set -a
		# shellcheck source=/dev/null
		source "${E2E_STATE}/platform.env"
		# shellcheck source=/dev/null
		source "${E2E_STATE}/demo.env"
		# The instance's own Keycloak, where the tests make a corporate realm that Moat's brokers to.
		TEST_KEYCLOAK_URL="${MOAT_OIDC_ISSUER%/realms/*}"
		TEST_KEYCLOAK_ADMIN_USER=admin
		TEST_KEYCLOAK_ADMIN_PASSWORD="$(secret KEYCLOAK_ADMIN_PASSWORD)"
		set +a
		go test -count=1 -race -tags e2e github.com/moat-ai/moat/e2e/...
	)

	section "e2e: stopping the platform instance"
	MOAT_INSTANCE="${E2E_INSTANCE}" MOAT_KEEP_PG=1 "${MOAT_ROOT}/scripts/dev-down.sh"
	e2e_started=0
	scan_secrets
	local left
	mapfile -t left < <(tagged_pids "${E2E_STATE}")
	mapfile -t left < <(live_pids "${left[@]}")
	((${#left[@]} == 0)) || die "e2e left processes running: ${left[*]}"
	log "no service or nats-server process of the e2e platform is left"
}

case ${phase} in
integration)
	run_go_tests
	;;
e2e)
	run_e2e
	;;
all)
	run_go_tests
	section "make lint"
	make lint
	section "make check-modules"
	make check-modules
	section "make check-generated"
	make check-generated
	run_e2e
	;;
esac

test_keycloak_stop
if ((PG_STARTED)); then
	section "stopping PostgreSQL"
	pg_stop
	PG_STARTED=0
	mapfile -t left < <(pg_leftover_pids)
	((${#left[@]} == 0)) || die "PostgreSQL processes left running: ${left[*]}"
	log "no PostgreSQL process of this run is left"
fi
section "scripts/test.sh ${phase}: everything passed"
