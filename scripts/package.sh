#!/usr/bin/env bash
# Builds the RPM and the .deb from the workspace (cargo generate-rpm, cargo deb) into
# target/packages/; `--check` then checks their contents. OWNER: packaging helper (issue 15).
# Stub of the interface commit.
set -euo pipefail
echo "package.sh: not built yet" >&2
