//! A model of controller units laid out as Juju lays them out (`<data-dir>/agents/
//! unit-controller-<n>/charm` with the compiled `dispatch` in it, one data dir per machine),
//! run under the hook-tool emulator, with a stand-in reload socket per machine on demand.

use std::fs;
use std::path::PathBuf;

use juju_sim::model::{Application, ToolCall};
use juju_sim::responder::Responder;
use juju_sim::{locate_hook_tool, Invocation, NetworkInfo, Outcome, Runner, State, Store};
use serde_json::json;

/// The peer relation every model has.
pub const RELATION: &str = "db-cluster:0";

/// A model of `n` controller units in a temp dir.
pub struct Model {
    /// The reload-socket stand-ins, by machine number (dropped first: they live in `dir`).
    responders: Vec<Option<Responder>>,
    /// Runs hooks against the model.
    pub runner: Runner,
    /// Holds every file of the model; removed on drop, last.
    pub dir: tempfile::TempDir,
}

/// `controller/<n>`.
pub fn unit(n: usize) -> String {
    format!("controller/{n}")
}

impl Model {
    /// `units` controllers on machines 0.., unit n at 10.0.0.(5+n) on eth0; controller/0
    /// leads; every unit has joined the peer relation.
    pub fn new(units: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let hook_tool = locate_hook_tool().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(dir.path().join("model.json"));
        let runner = Runner::new(store, &hook_tool, &dir.path().join("tools")).expect("runner");
        let mut state = State {
            model_name: "controller".into(),
            api_addresses: vec!["10.0.0.5:17070".into()],
            ..State::default()
        };
        state.applications.insert(
            "controller".into(),
            Application {
                config: [
                    ("data-dir", json!("")),
                    ("reload-socket", json!("")),
                    ("bind-cidr", json!("")),
                    ("address-family", json!("auto")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                status: None,
            },
        );
        state.leaders.insert("controller".into(), unit(0));
        let relation = state.add_relation("db-cluster");
        assert_eq!(relation, RELATION);
        let mut model = Self {
            dir,
            runner,
            responders: Vec::new(),
        };
        for n in 0..units {
            let charm_dir = model
                .data_dir(n)
                .join(format!("agents/unit-controller-{n}/charm"));
            fs::create_dir_all(&charm_dir).expect("charm dir");
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dispatch"), charm_dir.join("dispatch"))
                .expect("dispatch link");
            let address = format!("10.0.0.{}/24", 5 + n);
            state.units.insert(
                unit(n),
                juju_sim::model::Unit {
                    machine: n.to_string(),
                    charm_dir,
                    network: [(
                        "db-cluster".to_owned(),
                        NetworkInfo::from_interfaces(&[("eth0", &[address.as_str()])]).to_value(),
                    )]
                    .into(),
                    ..Default::default()
                },
            );
            state.join_relation(RELATION, &unit(n));
            model.responders.push(None);
        }
        model.runner.store().save(&state).expect("save model");
        model
    }

    /// Machine n's data dir.
    pub fn data_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("m{n}"))
    }

    /// Machine n's controller.conf (agent id n).
    pub fn conf_path(&self, n: usize) -> PathBuf {
        controller_contract::paths::controller_conf(&self.data_dir(n), &n.to_string())
    }

    /// Machine n's controller.conf text, if any.
    pub fn conf(&self, n: usize) -> Option<String> {
        fs::read_to_string(self.conf_path(n)).ok()
    }

    /// Starts machine n's reload socket, answering agent id n.
    pub fn start_agent(&mut self, n: usize) -> &Responder {
        let socket = controller_contract::paths::reload_socket(&self.data_dir(n));
        let responder = Responder::start(&socket, &n.to_string()).expect("reload responder");
        self.responders[n] = Some(responder);
        self.responders[n].as_ref().expect("just set")
    }

    /// Stops machine n's reload socket.
    pub fn stop_agent(&mut self, n: usize) {
        self.responders[n] = None;
    }

    /// Machine n's reload socket stand-in.
    pub fn agent(&self, n: usize) -> &Responder {
        self.responders[n].as_ref().expect("the agent was started")
    }

    /// The model.
    pub fn state(&self) -> State {
        self.runner.store().load().expect("load model")
    }

    /// Changes the model.
    pub fn update(&self, change: impl FnOnce(&mut State)) {
        self.runner.store().update(change).expect("update model");
    }

    /// Runs a hook or action on unit n.
    pub fn run(&self, n: usize, invocation: Invocation) -> Outcome {
        self.runner.run(&unit(n), &invocation).expect("run hook")
    }

    /// Runs a hook on unit n and insists it exits 0.
    pub fn hook(&self, n: usize, invocation: Invocation) -> Outcome {
        let outcome = self.run(n, invocation.clone());
        assert!(
            outcome.success(),
            "{invocation:?} on unit {n} failed: {outcome:?}"
        );
        outcome
    }

    /// Runs a hook on unit n, insists it exits 0, and returns the hook tools it called, in
    /// order.
    pub fn tools_called(&self, n: usize, invocation: Invocation) -> Vec<String> {
        self.calls_made(n, invocation)
            .into_iter()
            .map(|call| call.tool)
            .collect()
    }

    /// Runs a hook on unit n, insists it exits 0, and returns its hook-tool calls (tool and
    /// arguments), in order.
    pub fn calls_made(&self, n: usize, invocation: Invocation) -> Vec<ToolCall> {
        let before = self.state().calls.len();
        self.hook(n, invocation);
        self.state().calls[before..].to_vec()
    }

    /// Unit n's charm dir.
    pub fn charm_dir(&self, n: usize) -> PathBuf {
        self.state().units[&unit(n)].charm_dir.clone()
    }

    /// Unit n's status as (status, message).
    pub fn status(&self, n: usize) -> (String, String) {
        let status = self.state().units[&unit(n)]
            .status
            .clone()
            .expect("a status was set");
        (status.status, status.message)
    }

    /// Unit n's bag in the peer relation.
    pub fn unit_bag(&self, n: usize) -> juju_sim::model::Bag {
        self.state().relations[RELATION]
            .unit_bags
            .get(&unit(n))
            .cloned()
            .unwrap_or_default()
    }

    /// The application bag's `db-bind-addresses`.
    pub fn published(&self) -> Option<String> {
        self.state().relations[RELATION]
            .app_bags
            .get("controller")
            .and_then(|bag| bag.get("db-bind-addresses").cloned())
    }

    /// Sets unit n's db-cluster addresses.
    pub fn set_addresses(&self, n: usize, interfaces: &[(&str, &[&str])]) {
        let value = NetworkInfo::from_interfaces(interfaces).to_value();
        self.update(|state| {
            let unit = state.units.get_mut(&unit(n)).expect("unit");
            unit.network.insert("db-cluster".into(), value);
            unit.network_raw.clear();
        });
    }

    /// Makes unit n's `network-get db-cluster` print `text` verbatim.
    pub fn set_raw_network(&self, n: usize, text: &str) {
        self.update(|state| {
            state
                .units
                .get_mut(&unit(n))
                .expect("unit")
                .network_raw
                .insert("db-cluster".into(), text.to_owned());
        });
    }

    /// Runs `-relation-changed` on every unit for every other unit, `rounds` times: how Juju
    /// spreads bag changes, enough for the model to converge.
    pub fn settle(&self, units: usize, rounds: usize) {
        for _ in 0..rounds {
            for n in 0..units {
                for remote in (0..units).filter(|r| *r != n) {
                    self.hook(
                        n,
                        Invocation::relation("changed", RELATION, Some(&unit(remote))),
                    );
                }
            }
        }
    }
}

/// The hooks a new unit gets, in Juju's order (1b of the contract).
pub fn new_unit_hooks(leader: bool) -> Vec<Invocation> {
    vec![
        Invocation::hook("install"),
        Invocation::relation("created", RELATION, None),
        Invocation::hook(if leader {
            "leader-elected"
        } else {
            "leader-settings-changed"
        }),
        Invocation::hook("config-changed"),
        Invocation::hook("start"),
    ]
}
