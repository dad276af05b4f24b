#!/usr/bin/env bash
# Builds the release `dispatch` linked statically (glibc's static libraries, `crt-static`),
# as scripts/build-charm.sh packs it, and prints its path. `--path`: only prints the path.
#
# Why static: Juju execs dispatch for every hook and action, and a dynamically linked Rust
# binary spends about 0.4 ms of CPU in the dynamic loader before main on this kind of VM
# (`perf stat` of an empty Rust program: 0.98 ms task-clock dynamic, 0.59 ms static;
# /bin/true 0.68 ms), a fifth of the charm's 2 ms budget per hook. It also needs no glibc of
# the machine's base. dispatch resolves no host or user names (no NSS), which is what static
# glibc cannot do. `--target` keeps RUSTFLAGS off build scripts and proc macros and keeps
# these artifacts apart from the dynamic build's.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
path=${CARGO_TARGET_DIR:-$(pwd)/target}/$host/release/dispatch
if [ "${1:-}" != "--path" ]; then
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static --cfg httparse_disable_simd=\"1\"" \
    cargo build --release --locked -p controller-charm --bin dispatch --target "$host" >&2
fi
echo "$path"
