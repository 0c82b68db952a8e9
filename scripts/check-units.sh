#!/usr/bin/env bash
# Checks blkdrv's systemd units: `systemd-analyze verify` (no systemd as PID 1 needed), no
# directive that gives a unit a mount namespace of its own (or otherwise hides host mounts or
# devices from blkdrv: the hardening issue's lesson, see packaging/systemd/), and prints
# `systemd-analyze security --offline=yes` exposure scores.
#
#   scripts/check-units.sh          the units in packaging/systemd/, ExecStart's binary from
#                                   BLKDRV_BIN or target/{ci,release,debug}/blkdrv
#   scripts/check-units.sh ROOT     the units installed under ROOT (an unpacked package):
#                                   usr/lib/systemd/system/blkdrv-*.service, the containerd
#                                   drop-in, and ROOT's usr/bin/blkdrv
#
# verify resolves units and ExecStart paths inside a root: the script builds a throwaway one
# (the host's own unit directory for sysinit.target and friends, the blkdrv units, the binary)
# and removes it on exit. Exit 1 on any finding.
set -euo pipefail

# Paths given relative to the caller's directory stay valid after the cd below.
SRC_ROOT=${1:+$(realpath -m -- "$1")}
BLKDRV_BIN=${BLKDRV_BIN:+$(realpath -m -- "$BLKDRV_BIN")}
cd "$(dirname "$0")/.."
UNITS=(blkdrv-activate.service blkdrv-snapshotter.service)
DROPIN=containerd.service.d/blkdrv.conf
SYSTEMD_DIR=usr/lib/systemd/system

fail() {
    echo "check-units.sh: $*" >&2
    exit 1
}

command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (package systemd)"

TMP=$(mktemp -d /tmp/blkdrv-check-units.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
R=$TMP/root
mkdir -p "$R/$SYSTEMD_DIR/containerd.service.d" "$R/usr/bin"

# The units to check, and the binary their ExecStart names.
if [ -n "$SRC_ROOT" ]; then
    [ -d "$SRC_ROOT" ] || fail "$SRC_ROOT: not a directory"
    # /usr/lib/systemd/system (Fedora, merged-/usr Debian); /lib/systemd/system (older debs).
    SRC_DIR=$SRC_ROOT/$SYSTEMD_DIR
    if [ ! -f "$SRC_DIR/${UNITS[0]}" ] && [ -f "$SRC_ROOT/lib/systemd/system/${UNITS[0]}" ]; then
        SRC_DIR=$SRC_ROOT/lib/systemd/system
    fi
    for f in "${UNITS[@]}" "$DROPIN"; do
        [ -f "$SRC_DIR/$f" ] || fail "$SRC_ROOT: /$SYSTEMD_DIR/$f is missing"
        cp "$SRC_DIR/$f" "$R/$SYSTEMD_DIR/$f"
    done
    BIN=$SRC_ROOT/usr/bin/blkdrv
    [ -x "$BIN" ] || fail "$SRC_ROOT: /usr/bin/blkdrv (the units' ExecStart) is missing"
else
    for u in "${UNITS[@]}"; do
        cp "packaging/systemd/$u" "$R/$SYSTEMD_DIR/"
    done
    cp packaging/systemd/containerd-blkdrv.conf "$R/$SYSTEMD_DIR/$DROPIN"
    BIN=${BLKDRV_BIN:-}
    if [ -z "$BIN" ]; then
        for p in ci release debug; do
            if [ -x "target/$p/blkdrv" ]; then
                BIN=target/$p/blkdrv
                break
            fi
        done
    fi
    if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
        fail "no blkdrv binary: build it or set BLKDRV_BIN"
    fi
fi
# A hard link where it can (the debug binary is 150 MB), else a copy.
ln "$BIN" "$R/usr/bin/blkdrv" 2>/dev/null || cp "$BIN" "$R/usr/bin/blkdrv"

# Every unit file names its binary at the path the packages install it to.
for u in "${UNITS[@]}"; do
    grep -q '^ExecStart=/usr/bin/blkdrv ' "$R/$SYSTEMD_DIR/$u" ||
        fail "$u: ExecStart does not run /usr/bin/blkdrv"
done

# The targets and services the units order against; a stand-in containerd.service when the
# host has none, so the drop-in is loaded and verified with it.
if [ -d /usr/lib/systemd/system ]; then
    cp -an /usr/lib/systemd/system/. "$R/$SYSTEMD_DIR/" 2>/dev/null || true
    # Host units are not ours to verify, but containerd.service is: its binary must exist.
fi
cat >"$R/$SYSTEMD_DIR/containerd.service" <<'EOF'
[Unit]
Description=containerd (stand-in for check-units.sh)
[Service]
ExecStart=/usr/bin/blkdrv info
EOF

# 1. systemd-analyze verify: silent on success; any line is a finding (unknown keys, bad
# values and missing binaries are printed but do not all change its exit status).
# --man=no: the man pages are the packaging check's; here only the units.
out=$(cd "$TMP" && systemd-analyze verify --man=no --root="$R" "${UNITS[@]}" containerd.service 2>&1) ||
    fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
echo "verify: ${UNITS[*]} containerd.service (+ $DROPIN): clean"

# 2. No directive that hides the host's mounts or devices from blkdrv. Each makes a mount
# namespace (PrivateTmp, ProtectSystem...), or keeps blkdrv from devices it creates
# (DevicePolicy, ProtectClock's implied DeviceAllow), or refuses the setns(2) blkdrv uses to
# take down a mount in another namespace (RestrictNamespaces). Boolean ones may say no.
FORBIDDEN='PrivateTmp|PrivateDevices|PrivateNetwork|PrivateIPC|PrivateUsers|PrivateMounts|ProtectSystem|ProtectHome|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectClock|ProtectHostname|ProtectProc|ProcSubset|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|ExecPaths|NoExecPaths|ReadWriteDirectories|ReadOnlyDirectories|InaccessibleDirectories|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|MountFlags|MountImages|ExtensionImages|ExtensionDirectories|RootDirectory|RootImage|DynamicUser|NetworkNamespacePath|IPCNamespacePath|JoinsNamespaceOf|RestrictNamespaces|DevicePolicy|DeviceAllow'
# Prints `file:line: directive` for each namespace-making directive in the files given.
namespace_findings() {
    awk -v re="^($FORBIDDEN)\$" '
        /^[ \t]*[#;]/ { next }
        /=/ {
            key = $0; sub(/[ \t]*=.*/, "", key); sub(/^[ \t]+/, "", key)
            val = $0; sub(/^[^=]*=[ \t]*/, "", val)
            if (key ~ re && val !~ /^(no|false|off|0|)$/)
                printf "%s:%d: %s\n", FILENAME, FNR, $0
        }' "$@"
}
files=()
for u in "${UNITS[@]}"; do files+=("$R/$SYSTEMD_DIR/$u"); done
files+=("$R/$SYSTEMD_DIR/$DROPIN")
found=$(namespace_findings "${files[@]}")
[ -z "$found" ] || fail "directives that would hide host mounts or devices from blkdrv:
${found//$R\//}"
# The check itself must be able to fail: a copy with PrivateTmp=yes is caught.
bad=$TMP/bad.service
sed 's/^\[Service\]$/[Service]\nPrivateTmp=yes/' "$R/$SYSTEMD_DIR/${UNITS[0]}" >"$bad"
[ -n "$(namespace_findings "$bad")" ] || fail "the namespace check missed PrivateTmp=yes"
n=$(tr '|' '\n' <<<"$FORBIDDEN" | wc -l)
echo "namespaces: none of the $n directives that hide host mounts or devices (a PrivateTmp=yes copy is caught)"

# 3. Exposure scores (informational: a storage daemon running as root without a mount
# namespace stays MEDIUM; the README quotes them).
for u in "${UNITS[@]}"; do
    score=$(cd "$TMP" || exit
        systemd-analyze security --offline=yes --root="$R" "$u" 2>&1 |
            grep -a 'Overall exposure level' || true)
    echo "security: ${score:-$u: no score (systemd-analyze security --offline needs systemd 250+)}"
done
