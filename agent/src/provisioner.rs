//! The compute provisioner: a singular worker (it runs only on the controller holding the
//! `singular-controller` lease) that starts an instance in the cloud for every machine
//! requested in the `machine` table, and stops the instance of every machine marked
//! `dying`.
//!
//! Exactly once, across lease hand-overs: every database write carries the lease token
//! ([`lease::exec_fenced`]) and so does every cloud request ([`CloudFence`]); the cloud
//! refuses a token older than the newest it has seen for the machine, and its start is
//! idempotent per machine. A machine moves `pending -> provisioning -> started`:
//!
//! 1. mark it `provisioning` (fenced);
//! 2. ask the cloud for its instance (this raises the machine's fence in the cloud, so a
//!    paused former holder can no longer start one);
//! 3. only without one: write a new agent password's hash (fenced), then start the
//!    instance with that password;
//! 4. record the instance (fenced).
//!
//! A holder that dies after 3 leaves the machine `provisioning` with a running instance:
//! the next holder finds the instance at 2 and only records it, and the password hash the
//! instance's agent uses stays (it was written before the start, and is rewritten only when
//! no instance exists). Removal: the cloud stops the instance (idempotent, fenced), then the
//! credential and the row go (fenced).
//!
//! The cloud is a command ([`CloudCommand`]) that takes one JSON request on stdin and
//! answers one JSON reply on stdout ([`controller_contract::cloud`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use controller_contract::cloud::{AgentBootstrap, CloudFence, CloudReply, CloudRequest, Instance};
use controller_contract::describe_error;
use dbaccessor::Database;
use dqlite::client::Client;
use dqlite::wire::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::database;
use crate::host::{Stop, WorkerSpec};
use crate::identity;
use crate::lease::{self, FencedWrite};
use crate::schema::DATABASE;
use crate::singular::Fence;

/// The worker's name.
pub const NAME: &str = "compute-provisioner";

/// How the cloud is reached: `program args...`, the request on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// The provisioner's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cloud: CloudCommand,
    /// How often the `machine` table is read.
    pub poll: Duration,
    /// The longest one cloud request may take.
    pub cloud_timeout: Duration,
}

/// The cloud as the provisioner sees it: one request, one reply. [`CommandCloud`] in
/// production; a test's in-memory cloud otherwise.
pub trait Cloud: Sync {
    fn call(
        &self,
        request: &CloudRequest,
    ) -> impl std::future::Future<Output = anyhow::Result<CloudReply>> + Send;
}

/// The cloud behind a command ([`call_cloud`]).
#[derive(Debug, Clone)]
pub struct CommandCloud<'a>(pub &'a Settings);

impl Cloud for CommandCloud<'_> {
    fn call(
        &self,
        request: &CloudRequest,
    ) -> impl std::future::Future<Output = anyhow::Result<CloudReply>> + Send {
        call_cloud(self.0, request)
    }
}

/// The provisioner as a singular worker of one grant.
pub fn worker(
    fence: Fence,
    settings: Settings,
    available: watch::Receiver<Option<Database>>,
) -> WorkerSpec {
    WorkerSpec::new(NAME, &[], move |stop| {
        run(fence.clone(), settings.clone(), available.clone(), stop)
    })
}

/// One machine as the provisioner reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    pub id: u32,
    pub status: String,
    pub spaces: Vec<String>,
}

/// What a round did, or why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Every machine it looked at is where it should be (or waits for the next round).
    Done {
        started: Vec<u32>,
        stopped: Vec<u32>,
    },
    /// The database or the cloud refused the token: this grant is over.
    Stale(String),
}

/// The `machine` rows that need the provisioner, in id order.
pub async fn machines_to_do(client: &mut Client) -> anyhow::Result<Vec<MachineRow>> {
    let rows = client
        .query(
            DATABASE,
            "SELECT id, status, spaces FROM machine WHERE status != 'started' ORDER BY id LIMIT 100",
            &[],
        )
        .await
        .context("cannot read the machines")?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Integer(id), Value::Text(status), Value::Text(spaces)] => Some(MachineRow {
                id: u32::try_from(*id).ok()?,
                status: status.clone(),
                spaces: spaces
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            _ => None,
        })
        .collect())
}

async fn run(
    fence: Fence,
    settings: Settings,
    mut available: watch::Receiver<Option<Database>>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let who = format!("{NAME} of {}", fence.token);
    let Some(mut client) = database::open(&mut available, &mut stop, &who).await? else {
        return Ok(());
    };
    let cloud = CommandCloud(&settings);
    loop {
        let outcome = tokio::select! {
            outcome = round(&mut client, &fence, &cloud) => outcome,
            () = stop.requested() => return Ok(()),
        };
        match outcome {
            Ok(Round::Done { started, stopped }) => {
                if !started.is_empty() || !stopped.is_empty() {
                    log::info!("{who}: started machines {started:?}, stopped machines {stopped:?}");
                }
            }
            Ok(Round::Stale(why)) => {
                log::warn!("{who}: {why}; acting no more");
                stop.requested().await;
                return Ok(());
            }
            // The host restarts the worker with back-off (a new connection).
            Err(e) => return Err(e.context(who)),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.poll) => {}
            () = stop.requested() => return Ok(()),
        }
    }
}

/// One pass over the machines that need the provisioner. A machine whose step fails is
/// logged and left for the next round; only reading the machines fails the round.
pub async fn round(
    client: &mut Client,
    fence: &Fence,
    cloud: &impl Cloud,
) -> anyhow::Result<Round> {
    let mut started = Vec::new();
    let mut stopped = Vec::new();
    for machine in machines_to_do(client).await? {
        let outcome = if machine.status == "dying" {
            remove(client, fence, cloud, machine.id).await
        } else {
            provision(client, fence, cloud, &machine).await
        };
        // One machine the cloud cannot start (say, a space it does not have) must not hold
        // up the others: it is tried again next round.
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                log::warn!(
                    "machine {}: {}; trying again next round",
                    machine.id,
                    describe_error(e.as_ref())
                );
                continue;
            }
        };
        match outcome {
            Step::Done => {
                if machine.status == "dying" {
                    stopped.push(machine.id);
                } else {
                    started.push(machine.id);
                }
            }
            Step::Skipped => {}
            Step::Stale(why) => return Ok(Round::Stale(why)),
        }
    }
    Ok(Round::Done { started, stopped })
}

/// What one machine's step came to.
enum Step {
    Done,
    /// The row changed meanwhile (removed, or marked dying): the next round sees it.
    Skipped,
    Stale(String),
}

/// A fenced statement; `None` when the token is stale.
async fn fenced(
    client: &mut Client,
    fence: &Fence,
    sql: &str,
    params: &[Value],
) -> anyhow::Result<Option<u64>> {
    match lease::exec_fenced(client, &fence.key, &fence.token, sql, params).await? {
        FencedWrite::Applied(rows) => Ok(Some(rows)),
        FencedWrite::Stale => Ok(None),
    }
}

fn cloud_fence(fence: &Fence) -> CloudFence {
    CloudFence {
        holder: fence.token.holder.clone(),
        start_ms: fence.token.start_ms,
    }
}

async fn provision(
    client: &mut Client,
    fence: &Fence,
    cloud: &impl Cloud,
    machine: &MachineRow,
) -> anyhow::Result<Step> {
    let id = machine.id;
    let token = fence.token.to_string();
    let holds = lease::holds_condition();
    let mark = format!(
        "UPDATE machine SET status = 'provisioning', provisioned_by = ?7 \
         WHERE id = ?6 AND status IN ('pending', 'provisioning') AND {holds}"
    );
    match fenced(
        client,
        fence,
        &mark,
        &[Value::Integer(id.into()), Value::Text(token.clone())],
    )
    .await?
    {
        None => return Ok(Step::Stale(format!("marking machine {id} refused"))),
        Some(0) => return Ok(Step::Skipped),
        Some(_) => {}
    }
    let lookup = CloudRequest::Instance {
        machine: id,
        fence: cloud_fence(fence),
    };
    let instance = match cloud.call(&lookup).await? {
        CloudReply::Instance {
            instance: Some(instance),
        } => {
            log::info!(
                "machine {id} already has instance {} (started by an earlier grant): recording it",
                instance.id
            );
            instance
        }
        CloudReply::Instance { instance: None } => {
            let password = identity::new_password();
            let tag = format!("machine-{id}");
            let hash = identity::hash_credential(&tag, &password)?;
            let credential = format!(
                "INSERT OR REPLACE INTO credential (name, password_hash) SELECT ?6, ?7 WHERE {holds}"
            );
            if fenced(
                client,
                fence,
                &credential,
                &[Value::Text(tag), Value::Text(hash)],
            )
            .await?
            .is_none()
            {
                return Ok(Step::Stale(format!(
                    "writing machine {id}'s credential refused"
                )));
            }
            let agent = agent_bootstrap(client, password).await?;
            let start = CloudRequest::StartInstance {
                machine: id,
                fence: cloud_fence(fence),
                spaces: machine.spaces.clone(),
                agent,
            };
            match cloud.call(&start).await? {
                CloudReply::Started { instance, existing } => {
                    log::info!(
                        "machine {id}: instance {} {} by {token}",
                        instance.id,
                        if existing { "found" } else { "started" }
                    );
                    instance
                }
                CloudReply::Stale { newest } => {
                    return Ok(Step::Stale(format!(
                        "the cloud refused starting machine {id} (newest {newest})"
                    )))
                }
                other => bail!("the cloud answered {other:?} to a start of machine {id}"),
            }
        }
        CloudReply::Stale { newest } => {
            return Ok(Step::Stale(format!(
                "the cloud refused a lookup of machine {id} (newest {newest})"
            )))
        }
        other => bail!("the cloud answered {other:?} to a lookup of machine {id}"),
    };
    record(client, fence, id, &instance, &token).await
}

async fn record(
    client: &mut Client,
    fence: &Fence,
    id: u32,
    instance: &Instance,
    token: &str,
) -> anyhow::Result<Step> {
    let sql = format!(
        "UPDATE machine SET status = 'started', instance_id = ?7, addresses = ?8, \
           provisioned_by = ?9 \
         WHERE id = ?6 AND status IN ('provisioning', 'started') AND {}",
        lease::holds_condition()
    );
    let params = [
        Value::Integer(id.into()),
        Value::Text(instance.id.clone()),
        Value::Text(instance.addresses.join(" ")),
        Value::Text(token.to_owned()),
    ];
    Ok(match fenced(client, fence, &sql, &params).await? {
        None => Step::Stale(format!("recording machine {id}'s instance refused")),
        // Marked dying meanwhile: the next round stops the instance.
        Some(0) => Step::Skipped,
        Some(_) => Step::Done,
    })
}

async fn remove(
    client: &mut Client,
    fence: &Fence,
    cloud: &impl Cloud,
    id: u32,
) -> anyhow::Result<Step> {
    let request = CloudRequest::StopInstance {
        machine: id,
        fence: cloud_fence(fence),
    };
    match cloud.call(&request).await? {
        CloudReply::Stopped { existed } => {
            log::info!(
                "machine {id}: {}",
                if existed {
                    "instance stopped"
                } else {
                    "no instance to stop"
                }
            );
        }
        CloudReply::Stale { newest } => {
            return Ok(Step::Stale(format!(
                "the cloud refused stopping machine {id} (newest {newest})"
            )))
        }
        other => bail!("the cloud answered {other:?} to a stop of machine {id}"),
    }
    let holds = lease::holds_condition();
    let credential = format!("DELETE FROM credential WHERE name = ?6 AND {holds}");
    if fenced(
        client,
        fence,
        &credential,
        &[Value::Text(format!("machine-{id}"))],
    )
    .await?
    .is_none()
    {
        return Ok(Step::Stale(format!(
            "deleting machine {id}'s credential refused"
        )));
    }
    let row = format!("DELETE FROM machine WHERE id = ?6 AND status = 'dying' AND {holds}");
    Ok(
        match fenced(client, fence, &row, &[Value::Integer(id.into())]).await? {
            None => Step::Stale(format!("deleting machine {id} refused")),
            Some(_) => Step::Done,
        },
    )
}

/// What a new agent needs, from the controller database: the controller UUID, the CA and
/// the agent-usable API addresses.
async fn agent_bootstrap(client: &mut Client, password: String) -> anyhow::Result<AgentBootstrap> {
    let text = |rows: dqlite::client::Rows| -> Vec<String> {
        rows.rows
            .into_iter()
            .filter_map(|row| match row.into_iter().next() {
                Some(Value::Text(text)) => Some(text),
                _ => None,
            })
            .collect()
    };
    let uuid = text(
        client
            .query(
                DATABASE,
                "SELECT value FROM controller_config WHERE key = 'controller-uuid'",
                &[],
            )
            .await?,
    );
    let ca = text(
        client
            .query(
                DATABASE,
                "SELECT cert_pem FROM controller_ca WHERE id = 1",
                &[],
            )
            .await?,
    );
    let api_addresses = text(
        client
            .query(
                DATABASE,
                "SELECT value FROM controller_api_address WHERE is_agent \
                 ORDER BY controller_id, value LIMIT 1000",
                &[],
            )
            .await?,
    );
    let (Some(controller_uuid), Some(ca_cert)) = (uuid.into_iter().next(), ca.into_iter().next())
    else {
        bail!("the controller has no UUID or no CA in its database yet");
    };
    Ok(AgentBootstrap {
        controller_uuid,
        ca_cert,
        password,
        api_addresses,
    })
}

/// Sends one request to the cloud command and reads its reply. The command is not killed
/// when the worker stops midway: a cloud operation is left to finish (the next holder's
/// lookup finds what it did).
pub async fn call_cloud(settings: &Settings, request: &CloudRequest) -> anyhow::Result<CloudReply> {
    let cloud = &settings.cloud;
    let mut child = tokio::process::Command::new(&cloud.program)
        .args(&cloud.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the cloud command {}", cloud.program.display()))?;
    let body = serde_json::to_vec(request).expect("a cloud request serializes");
    let mut stdin = child.stdin.take().context("the cloud command's stdin")?;
    let exchange = async move {
        stdin.write_all(&body).await?;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(settings.cloud_timeout, exchange)
        .await
        .with_context(|| {
            format!(
                "the cloud did not answer {:?} within {:?}",
                request_name(request),
                settings.cloud_timeout
            )
        })?
        .context("cannot talk to the cloud command")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "the cloud failed {} of machine {} ({}): {}",
            request_name(request),
            request.machine(),
            output.status,
            stderr.trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the cloud's answer to {} is not a reply: {:?}",
            request_name(request),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn request_name(request: &CloudRequest) -> &'static str {
    match request {
        CloudRequest::Instance { .. } => "instance",
        CloudRequest::StartInstance { .. } => "start-instance",
        CloudRequest::StopInstance { .. } => "stop-instance",
    }
}
