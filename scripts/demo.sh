#!/usr/bin/env bash
# The main job until the simulator lands: builds the charm (release) and runs one controller
# through the hooks a new Juju controller unit gets, under the hook-tool emulator, with a
# stand-in for the controller agent's reload socket. Prints the statuses, the relation bags,
# the action results and controller.conf. Leaves nothing running and nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building the charm and the hook-tool emulator (release)"
cargo build --release --locked -q -p controller-charm -p juju-sim --bins
bin="$PWD/target/release"

work="$(mktemp -d)"
responder=""
cleanup() {
  if [ -n "$responder" ]; then
    kill "$responder" 2>/dev/null || true
    wait "$responder" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# One machine laid out as Juju lays it out: its /var/lib/juju is $data.
data="$work/machine-0"
charm="$data/agents/unit-controller-0/charm"
mkdir -p "$charm"
cp "$bin/dispatch" "$charm/dispatch"
cp -r hooks metadata.yaml config.yaml actions.yaml "$charm/"
# controller.conf already holds a key of the agent's own: it must survive every rewrite.
mkdir -p "$data/agents/controller-0"
printf 'api-port: 17070\n' > "$data/agents/controller-0/controller.conf"
chmod 600 "$data/agents/controller-0/controller.conf"

# The model: one unit on machine 0 with a cloud-local, a link-local and a loopback address on
# its db-cluster binding, leader of its application, alone in the db-cluster peer relation.
state="$work/model.json"
cat > "$state" <<EOF
{
  "model_name": "controller",
  "model_uuid": "deadbeef-0bad-400d-8000-4b1d0d06f00d",
  "juju_version": "4.0.0",
  "api_addresses": ["10.0.0.5:17070"],
  "units": {
    "controller/0": {
      "machine": "0",
      "charm_dir": "$charm",
      "network": {
        "db-cluster": {
          "bind-addresses": [
            {"mac-address": "00:16:3e:00:00:01", "interface-name": "eth0", "addresses": [
              {"hostname": "", "value": "10.0.0.5", "cidr": "10.0.0.0/24"},
              {"hostname": "", "value": "fe80::216:3eff:fe00:1", "cidr": "fe80::/64"}]},
            {"mac-address": "00:00:00:00:00:00", "interface-name": "lo", "addresses": [
              {"hostname": "", "value": "127.0.0.1", "cidr": "127.0.0.0/8"}]}
          ],
          "egress-subnets": ["10.0.0.0/24"],
          "ingress-addresses": ["10.0.0.5"]
        }
      }
    }
  },
  "applications": {
    "controller": {"config": {"data-dir": "", "reload-socket": "", "bind-cidr": "", "address-family": "auto"}}
  },
  "leaders": {"controller": "controller/0"},
  "relations": {
    "db-cluster:0": {
      "endpoint": "db-cluster",
      "units": ["controller/0"],
      "unit_bags": {"controller/0": {"private-address": "10.0.0.5", "ingress-address": "10.0.0.5", "egress-subnets": "10.0.0.0/24"}},
      "app_bags": {}
    }
  },
  "next_id": 1
}
EOF

run() { "$bin/juju-hook-tool" run --state "$state" --unit controller/0 "$@"; }
status() { "$bin/juju-hook-tool" show --state "$state" | sed -n '2p'; }

echo
echo "== install, before the controller agent's reload socket is up"
run install
status

echo
echo "== the agent comes up (a stand-in answering GET /agent-id and POST /reload)"
socket="$data/configchange.socket"
"$bin/juju-hook-tool" reload-responder --socket "$socket" --agent-id 0 2> "$work/agent.log" &
responder=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.05; done

echo
echo "== the rest of a new unit's hooks"
run --relation db-cluster:0 db-cluster-relation-created
run leader-elected
run config-changed
run start
run update-status

echo
echo "== actions"
run action:bind-candidates
run action:cluster-status

echo
echo "== the model after the hooks"
"$bin/juju-hook-tool" show --state "$state"

echo
echo "== $data/agents/controller-0/controller.conf ($(stat -c %a "$data/agents/controller-0/controller.conf"))"
cat "$data/agents/controller-0/controller.conf"

echo
echo "== what the agent was asked (one reload: later hooks found nothing to change)"
sed 's/^/  /' "$work/agent.log"
