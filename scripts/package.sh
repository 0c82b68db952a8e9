#!/usr/bin/env bash
# Builds the RPM (cargo generate-rpm) and the .deb (cargo deb) of blkdrv into target/packages/,
# from the binary of one cargo profile; `--check` then checks what they hold.
#
#   scripts/package.sh [--profile P] [--check]      (PROFILE=P works too; default: release)
#
# The binary is the one the profile's build already made (scripts/test.sh builds target/ci/
# blkdrv, so CI builds nothing twice); it is built here only when missing or older than a
# source file. Beside it, in
# target/<profile>/pkg-assets/, go what the packages ship besides the binary: the stripped
# binary, man pages (`blkdrv manpages`, gzipped), completions (`blkdrv completion`), the
# units, containerd's drop-in and the snapshotter's environment file of packaging/systemd/;
# cli/Cargo.toml's [package.metadata.deb] and
# [package.metadata.generate-rpm] say where each file goes.
#
# The two cargo tools are installed once per version, outside the clone:
# ~/.cache/blkdrv/tools/<tool>-<version>/ (BLKDRV_CACHE moves ~/.cache/blkdrv).
#
# --check: the file lists (rpm -qlp, dpkg-deb -c), the dependencies (rpm -qp --requires and
# --suggests, dpkg-deb -I), the config files marked as such (%config(noreplace), conffile), the
# daemon-reload scriptlets; the RPM installed into a scratch rpm database (rpm -V, an edited
# config kept across a reinstall and on removal); then
# the .deb and the RPM unpacked into temporary roots: the same files in both, the .deb's
# `blkdrv --version` and `blkdrv info` run from its root with its config (as shipped, and with
# every key uncommented), man pages and completions that parse, and scripts/check-units.sh on
# the unpacked root.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
TOOLS=${BLKDRV_CACHE:-$HOME/.cache/blkdrv}/tools
OUT=target/packages

die() { echo "package.sh: $*" >&2; exit 1; }
usage() { echo "usage: scripts/package.sh [--profile P] [--check]" >&2; exit 2; }

profile=${PROFILE:-release}
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || usage; profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
# cargo-deb refuses the dev profile: debug builds are not for packages.
case "$profile" in
  dev|debug) echo "package.sh: profile '$profile': packages are built from an optimised profile (release, ci)" >&2; exit 2 ;;
esac
# The host tools, named up front: a missing one otherwise fails deep inside cargo deb (which
# runs dpkg-shlibdeps for the `$auto` dependencies) or halfway through the checks.
needed=(strip gzip dpkg-shlibdeps)
[ "$check" = 0 ] || needed+=(rpm rpm2cpio cpio dpkg-deb)
missing=()
for t in "${needed[@]}"; do command -v "$t" > /dev/null || missing+=("$t"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "package.sh: missing tools: ${missing[*]} (Debian: binutils gzip dpkg-dev rpm cpio; Fedora: binutils gzip dpkg-dev rpm cpio dpkg; scripts/setup.sh installs them)" >&2
  exit 1
fi
started=$SECONDS
say() { printf 'package.sh: %s\n' "$*"; }

# --- the tools ----------------------------------------------------------------------------------
tool_dir() { echo "$TOOLS/$1-$2"; }
install_tool() { # <crate> <version>: cargo install into the cache, once per version
  local dir t0=$SECONDS
  dir=$(tool_dir "$1" "$2")
  if [ -x "$dir/bin/$1" ]; then
    say "$1 $2: cached in $dir"
    return
  fi
  say "$1 $2: installing into $dir (cargo install --locked; minutes, once per version)"
  # Into a scratch root first, so an interrupted install never looks like a cached one.
  rm -rf "$dir.partial"
  cargo install --quiet --locked --version "$2" --root "$dir.partial" "$1" \
    || die "cargo install $1 $2 failed"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  say "$1 $2: installed in $((SECONDS - t0)) s"
}
install_tool cargo-deb "$CARGO_DEB_VERSION"
install_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
PATH="$(tool_dir cargo-deb "$CARGO_DEB_VERSION")/bin:$(tool_dir cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION")/bin:$PATH"

# --- the binary and the staged assets -----------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/$profile/blkdrv
# A binary newer than every source file is packaged as it is: scripts/test.sh built it (with
# the test targets, whose features, e.g. layertar's `testing`, a `--bin blkdrv` build alone would
# drop, rebuilding half the workspace for nothing). Otherwise it is built here.
newer_source=""
if [ -x "$bin" ]; then
  newer_source=$(find . -path ./target -prune -o \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) \
                   -newer "$bin" -print -quit)
fi
if [ -x "$bin" ] && [ -z "$newer_source" ]; then
  say "packaging $bin as built (no source file is newer)"
else
  say "cargo build --profile $profile --bin blkdrv${newer_source:+ ($newer_source is newer than $bin)}"
  cargo build --workspace --profile "$profile" --locked --bin blkdrv --quiet \
    || die "cargo build --profile $profile failed"
fi
[ -x "$bin" ] || die "$bin: not built"

stage=$target_dir/$profile/pkg-assets
rm -rf "$stage"
mkdir -p "$stage/man8" "$stage/completions" "$stage/systemd"
strip -o "$stage/blkdrv" "$bin"
"$stage/blkdrv" manpages "$stage/man8" || die "blkdrv manpages failed"
gzip -9n "$stage"/man8/*.8
"$stage/blkdrv" completion bash > "$stage/completions/blkdrv"
"$stage/blkdrv" completion zsh > "$stage/completions/_blkdrv"
"$stage/blkdrv" completion fish > "$stage/completions/blkdrv.fish"
# The units, containerd's drop-in and the snapshotter's environment file, from
# packaging/systemd/ (the systemd helper's files; cli/Cargo.toml says where each goes).
for f in blkdrv-activate.service blkdrv-snapshotter.service containerd-blkdrv.conf blkdrv-snapshotter.env; do
  [ -f "packaging/systemd/$f" ] || die "packaging/systemd/$f is missing (the systemd units)"
done
mkdir -p "$stage/systemd/containerd.service.d"
cp packaging/systemd/blkdrv-activate.service packaging/systemd/blkdrv-snapshotter.service "$stage/systemd/"
cp packaging/systemd/containerd-blkdrv.conf "$stage/systemd/containerd.service.d/blkdrv.conf"
cp packaging/systemd/blkdrv-snapshotter.env "$stage/blkdrv-snapshotter.env"

# --- the packages -------------------------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT"/blkdrv*.deb "$OUT"/blkdrv*.rpm
say "cargo deb (profile $profile)"
cargo deb -p blkdrv-cli --profile "$profile" --no-build --no-strip --quiet -o "$OUT/" \
  || die "cargo deb failed"
say "cargo generate-rpm (profile $profile)"
cargo generate-rpm -p cli --profile "$profile" -o "$OUT/" \
  || die "cargo generate-rpm failed"
deb=$(realpath "$OUT"/blkdrv_*.deb)
rpm=$(realpath "$OUT"/blkdrv-*.rpm)
say "built $deb ($(du -k "$deb" | cut -f1) KiB) and $rpm ($(du -k "$rpm" | cut -f1) KiB) in $((SECONDS - started)) s"
[ "$check" = 1 ] || exit 0

# --- --check ------------------------------------------------------------------------------------
t_check=$SECONDS
failures=0
bad() { echo "package.sh: check failed: $*" >&2; failures=$((failures + 1)); }
has_line() { # <what> <list> <line>: the list holds that exact line
  grep -qxF -- "$3" <<< "$2" || bad "$1 lacks $3"
}
scratch=$(mktemp -d /tmp/blkdrv-package-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# The files both packages hold (the zsh directory and the snapshotter's environment file
# differ: Fedora's site-functions and /etc/sysconfig, Debian's vendor-completions and
# /etc/default); man pages: one per page `blkdrv manpages` wrote.
common=(/usr/bin/blkdrv /etc/blkdrv/blkdrv.toml
        /usr/share/bash-completion/completions/blkdrv
        /usr/share/fish/vendor_completions.d/blkdrv.fish
        /usr/lib/systemd/system/blkdrv-activate.service
        /usr/lib/systemd/system/blkdrv-snapshotter.service
        /usr/lib/systemd/system/containerd.service.d/blkdrv.conf)
pages=()
for p in "$stage"/man8/*.8.gz; do pages+=("/usr/share/man/man8/${p##*/}"); done
[ "${#pages[@]}" -ge 10 ] || bad "only ${#pages[@]} man pages staged"
for p in blkdrv.8.gz blkdrv-pool-init.8.gz blkdrv-pool-activate.8.gz blkdrv-storage-setup.8.gz; do
  [ -f "$stage/man8/$p" ] || bad "no man page $p"
done

# RPM
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null)
for f in "${common[@]}" "${pages[@]}" /usr/share/zsh/site-functions/_blkdrv /etc/sysconfig/blkdrv-snapshotter; do has_line "rpm -qlp" "$rpm_files" "$f"; done
rpm_requires=$(rpm -qp --requires "$rpm" 2>/dev/null | awk '{print $1}')
for d in xfsprogs e2fsprogs btrfs-progs lvm2 device-mapper-persistent-data util-linux; do
  has_line "rpm -qp --requires" "$rpm_requires" "$d"
done
rpm_suggests=$(rpm -qp --suggests "$rpm" 2>/dev/null | awk '{print $1}')
has_line "rpm -qp --suggests" "$rpm_suggests" zfs
# %config(noreplace): the file flags 'c' (config) and 'n' (noreplace).
for f in /etc/blkdrv/blkdrv.toml /etc/sysconfig/blkdrv-snapshotter; do
  flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null | awk -v f="$f" '$1 == f {print $2}')
  case "$flags" in *c*n*|*n*c*) ;; *) bad "rpm: $f is not %config(noreplace) (flags '$flags')" ;; esac
done

rpm -qp --scripts "$rpm" 2>/dev/null | grep -q 'systemctl daemon-reload' \
  || bad "rpm -qp --scripts: no daemon-reload after install/removal"

# .deb
deb_files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; /\/$/d')
for f in "${common[@]}" "${pages[@]}" /usr/share/zsh/vendor-completions/_blkdrv /etc/default/blkdrv-snapshotter; do has_line "dpkg-deb -c" "$deb_files" "$f"; done
deb_field() { dpkg-deb -f "$deb" "$1" | tr ',' '\n' | sed 's/^ *//; s/ .*//'; }
deb_depends=$(deb_field Depends)
for d in xfsprogs e2fsprogs btrfs-progs lvm2 thin-provisioning-tools dmsetup util-linux libc6; do
  has_line "dpkg-deb -I (Depends)" "$deb_depends" "$d"
done
has_line "dpkg-deb -I (Suggests)" "$(deb_field Suggests)" zfsutils-linux
has_line "dpkg-deb -I (Package)" "$(dpkg-deb -f "$deb" Package)" blkdrv
for script in postinst postrm; do
  dpkg-deb -I "$deb" "$script" 2>/dev/null | grep -q 'systemctl daemon-reload' \
    || bad "dpkg-deb -I: no $script with daemon-reload"
done
deb_conffiles=$(dpkg-deb -I "$deb" conffiles 2>/dev/null || true)
for f in /etc/blkdrv/blkdrv.toml /etc/default/blkdrv-snapshotter; do has_line "dpkg-deb -I conffiles" "$deb_conffiles" "$f"; done

# Unpacked: the same files, the same binary.
root=$scratch/deb
rpm_root=$scratch/rpm
mkdir -p "$root" "$rpm_root"
dpkg-deb -x "$deb" "$root"
rpm -K "$rpm" > /dev/null || bad "rpm -K: the RPM's digests do not match"
# rpm2cpio 4.18 exits 1 on cargo-generate-rpm's packages although it writes the whole payload
# (rpm -K above checks its digest; the file count is compared below): cpio's status counts.
(cd "$rpm_root" && { rpm2cpio "$rpm" || true; } | cpio -idm --quiet) || bad "rpm2cpio | cpio failed"
[ "$(find "$rpm_root" -type f | wc -l)" -eq "$(wc -l <<< "$rpm_files")" ] \
  || bad "the unpacked RPM holds $(find "$rpm_root" -type f | wc -l) files, rpm -qlp lists $(wc -l <<< "$rpm_files")"
# Debian's copyright file is the .deb's own (cargo deb writes it from the license field).
listing() { (cd "$1" && find . -type f | sed 's|^\.||; s|/zsh/[a-z-]*/_blkdrv$|/zsh/_blkdrv|; s|^/etc/[a-z]*/blkdrv-snapshotter$|/etc/ENV/blkdrv-snapshotter|; \|^/usr/share/doc/blkdrv/copyright$|d' | sort); }
if ! diff <(listing "$root") <(listing "$rpm_root") > "$scratch/diff"; then
  bad "the .deb and the RPM hold different files: $(tr '\n' ' ' < "$scratch/diff")"
fi
cmp -s "$root/usr/bin/blkdrv" "$rpm_root/usr/bin/blkdrv" || bad "the .deb and the RPM hold different binaries"

# The RPM installed for real into a database of its own (dependencies and scriptlets aside: the
# root holds nothing else): rpm -V finds every file as packaged; an edited config survives a
# reinstall (noreplace) and is kept as .rpmsave on removal, which removes everything else.
rdb=$scratch/rpm-installed
mkdir -p "$rdb"
rpm_in() { # <rpm args>...: in the scratch root; its output only when it fails (Debian's rpm
  # warns on every install that it is not the system's package manager)
  rpm --root "$rdb" "$@" > "$scratch/rpm.log" 2>&1 && return 0
  bad "rpm $*: $(grep -v 'Alien\|assuming you know' "$scratch/rpm.log" | tr '\n' ' ')"
  return 1
}
if rpm_in --initdb && rpm_in -i --nodeps --noscripts "$rpm"; then
  rpm_in -V --nodeps blkdrv || true
  echo '# edited by the admin' >> "$rdb/etc/blkdrv/blkdrv.toml"
  if rpm_in -U --replacepkgs --nodeps --noscripts "$rpm"; then
    tail -n1 "$rdb/etc/blkdrv/blkdrv.toml" | grep -q 'edited by the admin' \
      || bad "rpm -U replaced the edited /etc/blkdrv/blkdrv.toml"
  fi
  if rpm_in -e --nodeps --noscripts blkdrv; then
    [ ! -e "$rdb/usr/bin/blkdrv" ] || bad "rpm -e left /usr/bin/blkdrv"
    [ -f "$rdb/etc/blkdrv/blkdrv.toml.rpmsave" ] || bad "rpm -e did not keep the edited config as .rpmsave"
  fi
fi

# The packaged binary, from the unpacked root, with the packaged config.
ub=$root/usr/bin/blkdrv
cfg=$root/etc/blkdrv/blkdrv.toml
want_version="blkdrv $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
got_version=$("$ub" --version 2>&1) || bad "blkdrv --version failed: $got_version"
[ "$got_version" = "$want_version" ] || bad "blkdrv --version says '$got_version', not '$want_version'"
state=$scratch/state
if ! out=$("$ub" --root "$state" --config "$cfg" info 2>&1); then
  bad "blkdrv info from the unpacked root failed: $out"
fi
# Every documented key, uncommented: the binary accepts them all (unknown keys are refused).
[ -f "$cfg" ] || bad "the .deb has no $cfg"
sed -e 's/^#\(\[[a-z]*\]\)$/\1/' -e 's/^#\([a-z_]* = \)/\1/' "$cfg" > "$scratch/uncommented.toml" 2>/dev/null || true
keys=$(grep -cE '^[a-z_]+ = ' "$scratch/uncommented.toml" || true)
[ "$keys" -ge 5 ] || bad "the sample config documents $keys keys, not the 5 pool/src/config.rs reads"
if ! out=$("$ub" --root "$state" --config "$scratch/uncommented.toml" info 2>&1); then
  bad "blkdrv info with every sample key set failed: $out"
fi
# Man pages and completions parse.
for p in "$root"/usr/share/man/man8/*.8.gz; do
  zcat "$p" | head -n 5 | grep -q '^\.TH ' || bad "${p##*/}: no .TH header"
done
bash -n "$root/usr/share/bash-completion/completions/blkdrv" || bad "bash completion: syntax"
if command -v zsh > /dev/null; then zsh -n "$root/usr/share/zsh/vendor-completions/_blkdrv" || bad "zsh completion: syntax"; fi
if command -v fish > /dev/null; then fish -n "$root/usr/share/fish/vendor_completions.d/blkdrv.fish" || bad "fish completion: syntax"; fi

# The units, installed where the package puts them, with the binary their ExecStart names.
say "scripts/check-units.sh on the unpacked .deb root"
./scripts/check-units.sh "$root" || bad "scripts/check-units.sh $root"

say "rpm: $(wc -l <<< "$rpm_files") files, $(du -k "$rpm" | cut -f1) KiB; deb: $(wc -l <<< "$deb_files") files, $(du -k "$deb" | cut -f1) KiB; checked in $((SECONDS - t_check)) s"
if [ "$failures" -gt 0 ]; then
  echo "package.sh: $failures check(s) failed" >&2
  exit 1
fi
say "both packages checked"
