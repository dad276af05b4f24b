#!/usr/bin/env bash
# The main job: a simulated Juju controller model on this machine, running the real charm
# and one real controller agent (jujud-controller, whose workers are the dbaccessor and the
# API server) per controller machine (each machine its own network namespace).
# Bootstraps, grows to 3, 5 and 7 controllers, shrinks back to 1 one machine at a time,
# writes a row through the Dqlite cluster at every step and checks that every row written
# is still readable. Shows `status` and the `cluster-status` action at each step. Needs
# root (network namespaces). Leaves nothing running and nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (the simulator makes network namespaces)" >&2
  exit 1
fi
bash scripts/setup.sh

echo "== building the charm, the controller agent (its dbaccessor worker) and the simulator (release)"
cargo build --release --locked -q -p controller-charm -p agent -p juju-sim --bins
sim="$PWD/target/release/juju-sim"

work="$(mktemp -d /tmp/juju-sim-demo.XXXXXX)"
export JUJU_SIM_MODEL="$work/model"
cleanup() {
  if [ -f "$JUJU_SIM_MODEL/world.json" ]; then
    "$sim" destroy || true
  fi
  "$sim" cleanup >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n===== %s\n' "$*"; }

written=()
write_row() {
  # A client retries while the cluster cannot take writes (each try is bounded by the
  # simulator's 15 s shell timeout).
  local tries=1
  # Idempotent: a try whose outcome was lost (leadership moved mid-commit) may have
  # committed, and a blind retry would write the row twice.
  until "$sim" sql "INSERT INTO demo (step) SELECT '$1' WHERE NOT EXISTS (SELECT 1 FROM demo WHERE step = '$1')" 2>/dev/null; do
    if [ "$tries" -ge 8 ]; then
      echo "demo: the cluster took no write for $tries tries" >&2
      exit 1
    fi
    echo "  (write not accepted yet, retrying)"
    tries=$((tries + 1))
  done
  echo "wrote row '$1'"
  written+=("$1")
}
check_rows() {
  local got expected
  got="$("$sim" sql "SELECT step FROM demo ORDER BY id")"
  expected="$(printf '%s\n' "${written[@]}")"
  if [ "$got" != "$expected" ]; then
    echo "demo: rows differ! expected:" >&2
    echo "$expected" >&2
    echo "got:" >&2
    echo "$got" >&2
    exit 1
  fi
  echo "all ${#written[@]} rows written so far are readable"
}
show() {
  "$sim" status
  echo
  echo "\$ juju-sim run controller/$1 cluster-status"
  "$sim" run "controller/$1" cluster-status 2>/dev/null
}

step "juju-sim bootstrap"
"$sim" bootstrap
"$sim" sql "CREATE TABLE demo (id INTEGER PRIMARY KEY, step TEXT)"
write_row "bootstrap"
show 0
check_rows

for n in 3 5 7; do
  step "juju-sim enable-ha -n $n"
  "$sim" enable-ha -n "$n"
  write_row "enable-ha $n"
  show 0
  check_rows
done

step "juju-sim enable-ha -n 4 (refused, as Juju refuses it)"
"$sim" enable-ha -n 4 || true

for machine in 6 5 4 3 2 1; do
  step "juju-sim remove-machine $machine"
  "$sim" remove-machine "$machine"
  write_row "removed machine $machine"
  show 0
  check_rows
done

step "the go-dqlite shell's view of the cluster"
"$sim" sql .cluster

step "juju-sim destroy"
"$sim" destroy
echo "demo: done; every row written was readable at every step"
