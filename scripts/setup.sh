#!/usr/bin/env bash
# Installs what building and testing this project needs on a Debian machine, as root:
# libdqlite (the C library our nodes link), go-dqlite (the independent peers our tests
# run against) and the build tools. Skips apt entirely when everything is already there.
set -euo pipefail

packages=(libdqlite-dev go-dqlite pkg-config gcc libc6-dev iproute2 procps
  # sim/tests/client.rs: a CA certificate from outside the model (openssl req -x509).
  openssl
  # sim/tests/clock_skew.rs: controllers whose wall clock is off (juju-sim fault-clock-skew).
  libfaketime
  # build-charm.sh: the zip tool, objdump, and the static C libraries bin/dbaccessor links.
  zip binutils libraft-dev libuv1-dev liblz4-dev libsqlite3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# sim/tests/ops_charm.rs makes a venv with pip's `ops`: Debian's python3 needs python3-venv
# (a python3 of another origin, with venv built in, needs nothing).
if ! python3 -m venv --help >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
fi
if ! command -v cargo >/dev/null 2>&1; then
  # Debian's own toolchain is the only one a machine without rustup can get; it may be older
  # than this workspace's rust-version, in which case cargo says so plainly.
  missing+=(cargo rustc rustfmt rust-clippy)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install packages: run as root (or with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
