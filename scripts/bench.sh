#!/usr/bin/env bash
# Runs every benchmark in release mode. Each prints its numbers next to the targets and the
# anchors its issue names (go-dqlite's tools where they can run here). Nothing here asserts a
# timing: these are measurements to read, not tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The benches run the release binaries of other packages (dispatch, juju-hook-tool, dbaccessor).
cargo build --release --workspace --bins --locked
for bench in "controller-charm hook" "dqlite client" "dqlite node_failover" \
             "dbaccessor converge" "juju-sim ha"; do
  set -- $bench
  if ! grep -q "name = \"$2\"" "$(cargo metadata --format-version 1 --no-deps |
        python3 -c "import json,sys; m=json.load(sys.stdin); print(next(p['manifest_path'] for p in m['packages'] if p['name']=='$1'))")"; then
    echo "== $1 --bench $2: not present in this tree, skipped"
    continue
  fi
  echo "== cargo bench -p $1 --bench $2"
  cargo bench -p "$1" --bench "$2" --locked
done
