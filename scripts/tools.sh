#!/usr/bin/env bash
# Installs the pinned tools (versions in the Makefile) into ./bin, skipping those already there.
# Usage: scripts/tools.sh [TOOL...]   (default: all of them)
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
