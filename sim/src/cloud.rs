//! The simulated cloud as the controllers' compute provisioner sees it (`juju-sim cloud`,
//! run by the provisioner with one JSON request on stdin, [`controller_contract::cloud`]):
//! an instance is a workload machine of the world, with its namespace, NICs, `agent.conf`
//! and machine agent.
//!
//! Fencing: the world keeps, per machine, the newest lease token any request about it
//! carried, and refuses an older one, so a former holder cannot act on a machine once the
//! next holder has asked about it. Starting is idempotent per machine. Every request and
//! its outcome is appended to `<model>/cloud.log` (one JSON line each): the record that
//! shows each machine started once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller_contract::cloud::{CloudReply, CloudRequest, Instance};
use serde::{Deserialize, Serialize};

use crate::simulation::{self, Binaries, SimError, Simulation};

/// `<model>/cloud.log`.
pub fn log_path(model_dir: &Path) -> PathBuf {
    model_dir.join("cloud.log")
}

/// One line of `cloud.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudLogLine {
    /// The host's wall clock (milliseconds since the epoch).
    pub at_ms: i64,
    /// `instance`, `start-instance` or `stop-instance`.
    pub op: String,
    pub machine: u32,
    /// The request's token (`holder@start`).
    pub fence: String,
    /// `found`, `none`, `started`, `existing`, `stopped`, `absent` or `stale`.
    pub outcome: String,
}

/// Every line of `cloud.log` (lines that do not parse are skipped).
pub fn read_log(model_dir: &Path) -> Vec<CloudLogLine> {
    std::fs::read_to_string(log_path(model_dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn append_log(model_dir: &Path, request: &CloudRequest, outcome: &str) {
    let line = CloudLogLine {
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        op: match request {
            CloudRequest::Instance { .. } => "instance",
            CloudRequest::StartInstance { .. } => "start-instance",
            CloudRequest::StopInstance { .. } => "stop-instance",
        }
        .into(),
        machine: request.machine(),
        fence: request.fence().to_string(),
        outcome: outcome.into(),
    };
    let path = log_path(model_dir);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| {
            writeln!(
                file,
                "{}",
                serde_json::to_string(&line).expect("a log line serializes")
            )
        });
    if let Err(e) = appended {
        eprintln!("WARNING: cannot append to {}: {e}", path.display());
    }
}

/// The instance of workload machine `id`, if it runs (its agent was started).
fn instance(sim: &Simulation, id: u32) -> Option<Instance> {
    let machine = sim.world.machines.get(&id)?;
    (machine.workload && machine.agent_pid.is_some()).then(|| Instance {
        id: sim.world.machine_namespace(id),
        addresses: machine
            .nics
            .iter()
            .map(|nic| nic.address.to_string())
            .collect(),
    })
}

/// Answers one request against the model in `model_dir` (locked while it changes it).
pub fn serve(
    model_dir: &Path,
    bins: Binaries,
    request: &CloudRequest,
) -> anyhow::Result<CloudReply> {
    let mut sim = Simulation::open(model_dir, bins)?;
    let id = request.machine();
    let fence = request.fence();
    if let Some(newest) = sim.world.cloud_fences.get(&id) {
        if fence.start_ms < newest.start_ms {
            let newest = newest.clone();
            append_log(&sim.dir, request, "stale");
            return Ok(CloudReply::Stale { newest });
        }
    }
    sim.world.cloud_fences.insert(id, fence.clone());
    sim.save()?;
    let reply = match request {
        CloudRequest::Instance { .. } => {
            let found = instance(&sim, id);
            append_log(
                &sim.dir,
                request,
                if found.is_some() { "found" } else { "none" },
            );
            CloudReply::Instance { instance: found }
        }
        CloudRequest::StartInstance { spaces, agent, .. } => {
            if let Some(existing) = instance(&sim, id) {
                append_log(&sim.dir, request, "existing");
                return Ok(CloudReply::Started {
                    instance: existing,
                    existing: true,
                });
            }
            if sim.world.machines.get(&id).is_some_and(|m| !m.workload) {
                anyhow::bail!("machine {id} is a controller, not a workload machine");
            }
            // A start that failed midway left the machine without an agent: start again
            // on the NICs it already has.
            if !sim.world.machines.contains_key(&id) {
                sim.world.add_workload_machine_as(id, spaces)?;
                sim.save()?;
            }
            crate::netns::create_machine(&sim.world, id).map_err(SimError::from)?;
            let conf = simulation::WorkloadAgentConf {
                controller_uuid: agent.controller_uuid.clone(),
                model_uuid: sim.store().load()?.model_uuid,
                ca_cert: agent.ca_cert.clone(),
                password: agent.password.clone(),
                api_addresses: agent.api_addresses.clone(),
            };
            sim.start_workload_agent(id, &conf)?;
            append_log(&sim.dir, request, "started");
            let started = instance(&sim, id).expect("the agent was just started");
            let delay = Duration::from_millis(sim.world.cloud_start_reply_delay_ms);
            // The model is not held while the answer is late.
            drop(sim);
            std::thread::sleep(delay);
            CloudReply::Started {
                instance: started,
                existing: false,
            }
        }
        CloudRequest::StopInstance { .. } => {
            let existed = sim.world.machines.get(&id).is_some_and(|m| m.workload);
            if existed {
                sim.remove_workload_machine(id)?;
            }
            append_log(
                &sim.dir,
                request,
                if existed { "stopped" } else { "absent" },
            );
            CloudReply::Stopped { existed }
        }
    };
    Ok(reply)
}
