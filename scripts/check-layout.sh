#!/usr/bin/env bash
# Enforces the service layout (STYLE.md 3.13): in services/<svc>/, the module root holds the
# `main` package and every other Go package lives under services/<svc>/internal/, so the compiler
# forbids imports across services.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "${MOAT_ROOT}"
bad=0
shopt -s nullglob
for svcdir in services/*/; do
	svcdir=${svcdir%/}
	# Directories holding Go files, minus those the go tool ignores (testdata, _x, .x).
	while IFS= read -r dir; do
		sub=${dir#"${svcdir}"}
		sub=${sub#/}
		if [[ -z ${sub} ]]; then
			files=()
			for f in "${dir}"/*.go; do
				[[ ${f} == *_test.go ]] || files+=("${f}")
			done
			((${#files[@]} > 0)) || continue
			pkgs="$(grep -h -m1 -E '^package [A-Za-z0-9_]+' "${files[@]}" | awk '{print $2}' | sort -u | tr '\n' ' ')"
			if [[ ${pkgs} != "main " ]]; then
				echo "${dir}: the module root must hold only package main, found: ${pkgs}" >&2
				bad=1
			fi
		elif [[ ${sub} != internal && ${sub} != internal/* ]]; then
			echo "${dir}: Go package outside ${svcdir}/internal/" >&2
			bad=1
		fi
	done < <(find "${svcdir}" \( -name testdata -o -name '[._]?*' \) -prune -o -type f -name '*.go' -printf '%h\n' | sort -u)
done
((bad == 0)) || die "layout check failed: service packages other than main belong under services/<svc>/internal/"
log "layout ok"
