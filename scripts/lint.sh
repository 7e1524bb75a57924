#!/usr/bin/env bash
# `make lint`: golangci-lint in every module (config: .golangci.yml at the root), buf lint, buf
# breaking against the local main branch when it already has protos, and the layout rules. Runs
# every check and fails at the end if any failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "${MOAT_ROOT}"
failed=()

config=()
if [[ -f .golangci.yml ]]; then
	config=(--config "${MOAT_ROOT}/.golangci.yml")
else
	failed+=("golangci-lint: .golangci.yml is missing at the repository root")
fi
module_dirs="$(go list -m -f '{{.Dir}}')" || die "go list -m failed: every module in go.work must exist"
mapfile -t modules <<<"${module_dirs}"
for dir in "${modules[@]}"; do
	tags=()
	# The e2e suite only compiles with its build tag. Concurrent runs (other checkouts) wait for the
	# shared lock instead of failing.
	[[ ${dir} == "${MOAT_ROOT}/e2e" ]] && tags=(--build-tags=e2e)
	log "golangci-lint run in $(rel "${dir}")"
	(cd "${dir}" && "${MOAT_BIN}/golangci-lint" run --allow-serial-runners "${config[@]}" "${tags[@]}" ./...) ||
		failed+=("golangci-lint in $(rel "${dir}")")
done

if [[ -f buf.yaml ]]; then
	log "buf lint"
	"${MOAT_BIN}/buf" lint || failed+=("buf lint")
	if git rev-parse --verify --quiet refs/heads/main >/dev/null && git cat-file -e main:proto/moat 2>/dev/null; then
		# main's protos import the googleapis files that make tools copies into the git-ignored
		# proto/google, so `.git#branch=main` alone cannot build: export main's proto/ beside a copy
		# of them and compare against that.
		log "buf breaking against main"
		against="$(mktemp -d)"
		git archive main proto buf.yaml | tar -x -C "${against}"
		[[ -d proto/google ]] && cp -R proto/google "${against}/proto/"
		"${MOAT_BIN}/buf" breaking --against "${against}" || failed+=("buf breaking")
		rm -rf "${against}"
	else
		log "buf breaking skipped: the local main branch does not exist or has no proto/moat yet"
	fi
else
	failed+=("buf: buf.yaml is missing at the repository root")
fi

log "scripts/check-layout.sh"
"${MOAT_ROOT}/scripts/check-layout.sh" || failed+=("check-layout")

if ((${#failed[@]} > 0)); then
	printf '  failed: %s\n' "${failed[@]}" >&2
	die "lint failed"
fi
log "lint passed"
