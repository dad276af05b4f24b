#!/usr/bin/env bash
# Builds controller.charm (the `make charm` recipe): the release binaries, dispatch (linked
# statically: scripts/build-dispatch.sh) and bin/dbaccessor (libdqlite and its C dependencies
# linked statically), checked to need no glibc newer than Ubuntu 22.04's (2.35), staged in target/charm/ with hooks/, the YAML files
# and the systemd unit, and zipped.
#
#   scripts/build-charm.sh [OUTPUT]     (default: controller.charm in the repository root)
#
# For tests: CHARM_BINARIES=<dir> packs the dispatch and dbaccessor already in <dir> instead
# of building (CHARM_ALLOW_DYNAMIC_DQLITE=1 then accepts a dbaccessor linking libdqlite
# dynamically, as debug builds do); CHARM_STAGE=<dir> stages there.
#
# Needs: cargo, zip, objdump (binutils) and the static libraries of libdqlite-dev,
# libraft-dev, libuv1-dev, liblz4-dev, libsqlite3-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
output=${1:-$root/controller.charm}
case "$output" in /*) ;; *) output="$root/$output" ;; esac
max_glibc=2.35

# What a fresh clone needs (apt is skipped when everything is there).
bash scripts/setup.sh

for tool in cargo zip objdump; do
  command -v "$tool" >/dev/null || { echo "build-charm: $tool is missing (run scripts/setup.sh)" >&2; exit 1; }
done

if [ -n "${CHARM_BINARIES:-}" ]; then
  target=$CHARM_BINARIES
else
  echo "build-charm: building release binaries (dispatch static, dbaccessor with DQLITE_STATIC=1)" >&2
  DQLITE_STATIC=1 cargo build --release --locked -p dbaccessor --bin dbaccessor
  target=${CARGO_TARGET_DIR:-$root/target}/release
  dispatch=$(bash scripts/build-dispatch.sh)
fi
dispatch=${dispatch:-$target/dispatch}

# Every versioned glibc symbol a binary needs must exist in the oldest base's glibc. A
# statically linked binary (no program interpreter) needs none.
check_glibc() {
  local binary=$1 newest
  if ! objdump -p "$binary" | grep -q 'INTERP'; then
    echo "build-charm: $(basename "$binary") is statically linked: it needs no glibc" >&2
    return
  fi
  newest=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
  if [ -z "$newest" ]; then
    echo "build-charm: $binary has no versioned glibc symbols (not a dynamic glibc binary?)" >&2
    exit 1
  fi
  if [ "$(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -V | tail -n1)" != "$max_glibc" ]; then
    echo "build-charm: $binary needs GLIBC_$newest, newer than Ubuntu 22.04's $max_glibc:" >&2
    objdump -T "$binary" | grep "GLIBC_$newest" >&2
    exit 1
  fi
  if [ -z "${CHARM_ALLOW_DYNAMIC_DQLITE:-}" ] && objdump -p "$binary" | grep -q 'NEEDED.*libdqlite'; then
    echo "build-charm: $binary links libdqlite dynamically" >&2
    exit 1
  fi
  echo "build-charm: $(basename "$binary") needs glibc $newest at most (limit $max_glibc)" >&2
}
check_glibc "$dispatch"
check_glibc "$target/dbaccessor"

stage=${CHARM_STAGE:-${CARGO_TARGET_DIR:-$root/target}/charm}
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/hooks" "$stage/packaging"
install -m 0755 "$dispatch" "$stage/dispatch"
install -m 0755 "$target/dbaccessor" "$stage/bin/dbaccessor"
for hook in hooks/*; do
  install -m 0755 "$hook" "$stage/hooks/"
done
for file in metadata.yaml config.yaml actions.yaml manifest.yaml; do
  install -m 0644 "$file" "$stage/$file"
done
install -m 0644 packaging/jujud-dbaccessor.service "$stage/packaging/"
[ -f LICENSE ] && install -m 0644 LICENSE "$stage/"
[ -f README.md ] && install -m 0644 README.md "$stage/"

rm -f "$output"
# -X: no extra attributes (uid/gid, timestamps) beyond the unix permissions Juju needs.
(cd "$stage" && zip -q -r -X "$output" .)
echo "build-charm: wrote $output ($(du -h "$output" | cut -f1))" >&2
