//! The cloud's interface as the controller's compute provisioner uses it: one JSON request
//! on a cloud command's stdin, one JSON reply on its stdout. The simulator's cloud is
//! `juju-sim cloud`; a real provider would sit behind the same shape.
//!
//! Every request carries the provisioner's lease token ([`CloudFence`]). The cloud keeps,
//! per machine, the highest token start it has seen, and refuses a request with a lower one
//! ([`CloudReply::Stale`]): a former lease holder that was paused cannot start or stop an
//! instance once the next holder has asked about that machine. Start is idempotent per
//! machine: a machine that already has an instance gets it back, never a second one.

use serde::{Deserialize, Serialize};

/// The lease token of the provisioner that sends a request (`holder@start_ms`). Start
/// times of one lease strictly increase, so the higher start is the newer grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudFence {
    pub holder: String,
    pub start_ms: i64,
}

impl std::fmt::Display for CloudFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.holder, self.start_ms)
    }
}

/// What a new machine's agent needs to log in (Juju puts it in the instance's cloud-init as
/// `agent.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgentBootstrap {
    pub controller_uuid: String,
    /// The controller CA in PEM.
    pub ca_cert: String,
    /// The agent's password; only its hash is in the controller database.
    pub password: String,
    /// The controllers' API addresses (`ip:port`) known at provisioning time.
    pub api_addresses: Vec<String>,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum CloudRequest {
    /// The instance of `machine`, if it has one (raises the machine's fence to `fence`).
    Instance { machine: u32, fence: CloudFence },
    /// Starts an instance for `machine` with a NIC per space, unless it has one.
    StartInstance {
        machine: u32,
        fence: CloudFence,
        spaces: Vec<String>,
        agent: AgentBootstrap,
    },
    /// Stops and deletes `machine`'s instance, if it has one.
    StopInstance { machine: u32, fence: CloudFence },
}

impl CloudRequest {
    /// The machine the request is about.
    pub fn machine(&self) -> u32 {
        match self {
            Self::Instance { machine, .. }
            | Self::StartInstance { machine, .. }
            | Self::StopInstance { machine, .. } => *machine,
        }
    }

    /// The token the request carries.
    pub fn fence(&self) -> &CloudFence {
        match self {
            Self::Instance { fence, .. }
            | Self::StartInstance { fence, .. }
            | Self::StopInstance { fence, .. } => fence,
        }
    }
}

/// A running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The cloud's name for it.
    pub id: String,
    /// Its addresses.
    pub addresses: Vec<String>,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum CloudReply {
    /// To [`CloudRequest::Instance`].
    Instance { instance: Option<Instance> },
    /// To [`CloudRequest::StartInstance`]: `existing` when the machine already had it.
    Started { instance: Instance, existing: bool },
    /// To [`CloudRequest::StopInstance`]: whether there was an instance to stop.
    Stopped { existed: bool },
    /// Refused: a newer grant (`newest`) has already asked about this machine.
    Stale { newest: CloudFence },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_in_their_wire_shape() {
        let fence = CloudFence {
            holder: "controller-1".into(),
            start_ms: 42,
        };
        let request = CloudRequest::StartInstance {
            machine: 7,
            fence: fence.clone(),
            spaces: vec!["alpha".into()],
            agent: AgentBootstrap {
                controller_uuid: "u".into(),
                ca_cert: "pem".into(),
                password: "p".into(),
                api_addresses: vec!["10.0.0.1:17070".into()],
            },
        };
        let json = serde_json::to_value(&request).expect("json");
        assert_eq!(json["op"], "start-instance");
        assert_eq!(json["fence"]["start_ms"], 42);
        assert_eq!(json["agent"]["controller-uuid"], "u");
        let back: CloudRequest = serde_json::from_value(json).expect("parses");
        assert_eq!(back, request);
        assert_eq!(back.machine(), 7);
        assert_eq!(back.fence(), &fence);
        for reply in [
            CloudReply::Instance { instance: None },
            CloudReply::Started {
                instance: Instance {
                    id: "i-7".into(),
                    addresses: vec!["10.0.0.9".into()],
                },
                existing: true,
            },
            CloudReply::Stopped { existed: false },
            CloudReply::Stale { newest: fence },
        ] {
            let text = serde_json::to_string(&reply).expect("json");
            assert_eq!(
                serde_json::from_str::<CloudReply>(&text).expect("parses"),
                reply
            );
        }
    }
}
