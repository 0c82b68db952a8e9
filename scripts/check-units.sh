#!/usr/bin/env bash
# Checks the systemd units (packaging/systemd/, or those installed under ROOT): systemd-analyze
# verify, no directive that gives the unit its own mount namespace. OWNER: systemd helper
# (issue 15). Stub of the interface commit.
set -euo pipefail
echo "check-units.sh: not built yet" >&2
