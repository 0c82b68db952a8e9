#!/usr/bin/env bash
# Static checks of what is not Rust: shellcheck on the shell scripts, `vagrant validate` on
# vagrant/Vagrantfile. scripts/test.sh runs it; exit 1 if any check fails.
#
# ShellCheck runs on scripts/*.sh and vagrant/provision.sh at its default severity (every note);
# the VM harness's scripts (tests/vm/: run, mkimage, mkzfs, init, zfs-smoke and any other
# shell script there) at --severity=warning: their info notes (A && B || C on purpose, ls in
# a cache directory of known names) are the style they were written in.
#
# vagrant validate: what it checks depends on the plugins. It validates the configuration of
# the provider it would use; a provider block whose plugin is missing is not checked at all
# (Vagrant hands it a config object that accepts anything). With vagrant-libvirt installed
# (Debian's vagrant-libvirt; scripts/setup.sh installs it) the libvirt settings are checked;
# the VirtualBox block is checked only where VirtualBox is installed (Vagrant refuses an
# unusable provider): this says which were left unchecked.
set -euo pipefail
cd "$(dirname "$0")/.."

rc=0
fail() { echo "lint-static: $*" >&2; rc=1; }

# --- shellcheck ----------------------------------------------------------------------------------
command -v shellcheck >/dev/null || { echo "lint-static: shellcheck not found (scripts/setup.sh installs it)" >&2; exit 1; }
strict=(scripts/*.sh vagrant/provision.sh)
harness=()
for f in tests/vm/*; do
  [ -f "$f" ] || continue
  case "$(head -n1 "$f")" in '#!'*sh*) harness+=("$f") ;; esac
done
for f in "${strict[@]}"; do [ -f "$f" ] || fail "$f is missing"; done
if shellcheck "${strict[@]}"; then
  echo "shellcheck: ${#strict[@]} scripts clean (${strict[*]})"
else
  fail "shellcheck found problems in scripts/*.sh or vagrant/provision.sh"
fi
if shellcheck --severity=warning "${harness[@]}"; then
  echo "shellcheck --severity=warning: ${#harness[@]} VM harness scripts clean (${harness[*]})"
else
  fail "shellcheck found problems in tests/vm/"
fi

# --- vagrant validate -------------------------------------------------------------------------------
if ! command -v vagrant >/dev/null; then
  fail "vagrant not found (scripts/setup.sh installs it): vagrant/Vagrantfile not validated"
else
  # Vagrant's state and its home stay out of the clone and out of the user's ~/.vagrant.d.
  vtmp=$(mktemp -d /tmp/blkdrv-vagrant-validate.XXXXXX)
  trap 'rm -rf "$vtmp"' EXIT
  export VAGRANT_HOME=$vtmp/home VAGRANT_DOTFILE_PATH=$vtmp/dot VAGRANT_CHECKPOINT_DISABLE=1
  # The system plugins (Debian's vagrant-libvirt) are found through the gem paths, whatever
  # VAGRANT_HOME is; disks: the VirtualBox disks are an experimental feature of Vagrant 2.3.
  plugins=$(vagrant plugin list 2>/dev/null || true)
  if out=$(cd vagrant && VAGRANT_EXPERIMENTAL=disks vagrant validate 2>&1); then
    echo "vagrant validate: vagrant/Vagrantfile valid ($(vagrant --version))"
  else
    fail "vagrant validate failed:"
    grep -v '^==> vagrant:' <<<"$out" >&2 || true
  fi
  if grep -q '^vagrant-libvirt' <<<"$plugins"; then
    echo "vagrant validate: libvirt settings checked ($(grep '^vagrant-libvirt' <<<"$plugins"))"
  else
    echo "vagrant validate: libvirt settings NOT checked: no vagrant-libvirt plugin here"
  fi
  if command -v VBoxManage >/dev/null; then
    if out=$(cd vagrant && VAGRANT_EXPERIMENTAL=disks VAGRANT_DEFAULT_PROVIDER=virtualbox vagrant validate 2>&1); then
      echo "vagrant validate: VirtualBox settings checked"
    else
      fail "vagrant validate (VirtualBox) failed:"
      grep -v '^==> vagrant:' <<<"$out" >&2 || true
    fi
  else
    echo "vagrant validate: VirtualBox settings NOT checked: VirtualBox is not installed here"
  fi
fi
exit "$rc"
