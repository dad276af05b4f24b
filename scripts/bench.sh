#!/usr/bin/env bash
# Runs every benchmark in release mode. Each prints its numbers next to the targets and the
# anchors its issue names (go-dqlite's tools where they can run here). Nothing here asserts a
# timing: these are measurements to read, not tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The benches run the release binaries of other packages (dispatch, juju-hook-tool, dbaccessor).
cargo build --release --workspace --bins --locked
# The hook bench measures the dispatch that scripts/build-charm.sh packs (linked statically),
# and the simulator's benches run that one too (juju-sim reads JUJU_SIM_DISPATCH).
export CONTROLLER_CHARM_DISPATCH JUJU_SIM_DISPATCH
CONTROLLER_CHARM_DISPATCH=$(bash scripts/build-dispatch.sh)
JUJU_SIM_DISPATCH=$CONTROLLER_CHARM_DISPATCH
# package, bench name, the manifest that declares it
benches=(
  "controller-charm hook Cargo.toml"
  "dqlite client dqlite/Cargo.toml"
  "dqlite node_failover dqlite/Cargo.toml"
  "dqlite formation_failover dqlite/Cargo.toml"
  "dqlite cluster_sizes dqlite/Cargo.toml"
  "dqlite tls_cost dqlite/Cargo.toml"
  "dbaccessor converge dbaccessor/Cargo.toml"
  "dbaccessor blackhole_shrink dbaccessor/Cargo.toml"
  "dbaccessor partition dbaccessor/Cargo.toml"
  "juju-sim ha sim/Cargo.toml"
  "agent login agent/Cargo.toml"
  "juju-sim client sim/Cargo.toml"
  "juju-sim lease sim/Cargo.toml"
  "juju-sim agents sim/Cargo.toml"
)
# Every bench also prints `summary: measure | ours | anchor | ratio or target` lines; they are
# gathered into one table at the end.
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for entry in "${benches[@]}"; do
  read -r package bench manifest <<<"$entry"
  if ! grep -q "^name = \"$bench\"" "$manifest"; then
    echo "== $package --bench $bench: not in this tree, skipped"
    continue
  fi
  echo "== cargo bench -p $package --bench $bench"
  cargo bench -p "$package" --bench "$bench" --locked | tee >(grep '^summary: ' >>"$summary")
done
sleep 1 # the tee's process substitutions finish writing
echo
echo "== summary: ours against the anchor (go-dqlite's own stack where it runs here) or the issue's target"
sed 's/^summary: //' "$summary" | column -t -s '|'
