#!/usr/bin/env bash
# Builds the release `dispatch` linked statically, as scripts/build-charm.sh packs it, and
# prints its path. `--path`: only prints the path (of the build the last run made).
#
# Why static: Juju execs dispatch for every hook and action, and a dynamically linked Rust
# binary spends about 0.4 ms of CPU in the dynamic loader before main on this kind of VM
# (`perf stat` of an empty Rust program: 0.98 ms task-clock dynamic, 0.59 ms static;
# /bin/true 0.68 ms), a fifth of the charm's 2 ms budget per hook. It also needs no libc of
# the machine's base. dispatch resolves no host or user names (no NSS).
#
# Which libc: musl (Rust's `<arch>-unknown-linux-musl` target, its libc built in) when rustup
# has or can add that target, else glibc's static libraries (`crt-static`) with a warning.
# On this VM, where every CPUID instruction traps to the hypervisor (about 5 µs each), static
# glibc's start-up alone costs 0.43 ms of CPU (its CPU-feature and cache probing: 43 CPUIDs)
# and musl's 0.19 ms; over a whole leader relation-changed hook, 20 runs alternating, the
# dispatch's own CPU was 2.01 -> 1.87 ms (map change) and 1.37 -> 1.20 ms (steady state);
# musl's allocator gives back a little of the start-up saving.
#
# Both builds use:
# - `relocation-model=static`: a plain static executable, not static-pie, so the start-up
#   code does not relocate about 3,000 pointers (and touch their pages) before main: glibc's
#   start-up 0.59 -> 0.50-0.55 ms. Its load address is fixed; the stack, heap and mappings are
#   still randomised, and the process lives for one hook.
# - `httparse_disable_simd`: httparse otherwise picks its SIMD code at run time, and that
#   check runs std's CPU feature detection (about ten CPUIDs, ~45 µs) in every hook, to parse
#   the reload socket's one short response.
# `--target` keeps RUSTFLAGS off build scripts and proc macros and keeps these artifacts apart
# from the dynamic build's.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
musl=${host%-gnu}-musl
dir=${CARGO_TARGET_DIR:-$(pwd)/target}
flags="-C relocation-model=static --cfg httparse_disable_simd=\"1\""

# Whether rustup has the musl target (asked once; a host that is already musl has no other).
has_musl() {
  [ "$musl" != "$host" ] && command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx "$musl"
}

if [ "${1:-}" = "--path" ]; then
  if [ -x "$dir/$musl/release/dispatch" ] && has_musl; then
    echo "$dir/$musl/release/dispatch"
  else
    echo "$dir/$host/release/dispatch"
  fi
  exit 0
fi

if ! has_musl && [ "$musl" != "$host" ] && command -v rustup >/dev/null 2>&1; then
  echo "build-dispatch: adding rustup's $musl target (its std and libc, once)" >&2
  rustup target add "$musl" >&2 || true
fi
if has_musl; then
  RUSTFLAGS="${RUSTFLAGS:-} $flags" \
    cargo build --release --locked -p controller-charm --bin dispatch --target "$musl" >&2
  echo "$dir/$musl/release/dispatch"
else
  echo "build-dispatch: warning: no $musl target (rustup missing or offline): linking glibc" \
    "statically instead, which costs about 0.15 ms more CPU per hook" >&2
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static $flags" \
    cargo build --release --locked -p controller-charm --bin dispatch --target "$host" >&2
  echo "$dir/$host/release/dispatch"
fi
