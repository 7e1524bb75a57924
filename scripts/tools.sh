#!/usr/bin/env bash
# Installs the pinned tools (versions in the Makefile) into ./bin, skipping those already there,
# then the googleapis protos that proto/moat imports, if any (see ensure_googleapis in lib.sh).
# Usage: scripts/tools.sh [TOOL...]   (default: all of them, and the googleapis protos)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_go
tools=("$@")
if ((${#tools[@]} == 0)); then
	tools=("${MOAT_TOOLS[@]}")
fi
for tool in "${tools[@]}"; do
	ensure_tool "${tool}"
done
log "tools ready in bin/: ${tools[*]}"
if (($# == 0)); then
	ensure_googleapis
fi
