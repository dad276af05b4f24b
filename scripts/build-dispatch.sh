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
#
# Two more start-up costs go, each measured on this VM where every CPUID instruction traps
# to the hypervisor (about 5 µs each):
# - `relocation-model=static`: a plain static executable, not static-pie, so glibc does not
#   relocate about 3,000 pointers (and touch their pages) before main: start-up alone
#   0.59 -> 0.50-0.55 ms. Its load address is fixed; the stack, heap and mappings are still
#   randomised, and the process lives for one hook.
# - `httparse_disable_simd`: httparse otherwise picks its SIMD code at run time, and that
#   check runs std's CPU feature detection (about ten CPUIDs, ~45 µs) in every hook, to parse
#   the reload socket's one short response.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
path=${CARGO_TARGET_DIR:-$(pwd)/target}/$host/release/dispatch
if [ "${1:-}" != "--path" ]; then
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static --cfg httparse_disable_simd=\"1\"" \
    cargo build --release --locked -p controller-charm --bin dispatch --target "$host" >&2
fi
echo "$path"
