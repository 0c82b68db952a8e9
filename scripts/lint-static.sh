#!/usr/bin/env bash
# Static checks of what is not Rust: shellcheck on the scripts, `vagrant validate` on
# vagrant/Vagrantfile. OWNER: Fedora/Vagrant helper (issue 15). Stub of the interface commit.
set -euo pipefail
echo "lint-static.sh: not built yet" >&2
