//! The compute provisioner's rounds against a real node and an in-memory cloud that fences
//! requests as the simulated cloud does: machines started once, an instance an earlier
//! grant started recorded without a second start (its agent's credential kept), one machine
//! the cloud cannot start not holding up the others, removal, and a stale token refused by
//! the database and by the cloud, with nothing started.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use agent::lease::{self, Claim, LeaseKey, Token};
use agent::provisioner::{self, Cloud, Round};
use agent::schema::{self, DATABASE};
use agent::singular::Fence;
use controller_contract::cloud::{CloudFence, CloudReply, CloudRequest, Instance};
use dqlite::client::Client;
use dqlite::wire::Value;

/// What the in-memory cloud holds.
#[derive(Default)]
struct CloudState {
    instances: BTreeMap<u32, Instance>,
    /// The newest token start seen per machine.
    fences: BTreeMap<u32, i64>,
    /// Every instance start, in order.
    starts: Vec<u32>,
    /// The password each start was given.
    passwords: BTreeMap<u32, String>,
    /// Machines whose start fails.
    failing: BTreeSet<u32>,
}

#[derive(Default)]
struct FakeCloud(Mutex<CloudState>);

impl FakeCloud {
    fn state(&self) -> std::sync::MutexGuard<'_, CloudState> {
        self.0.lock().expect("cloud state")
    }
}

impl Cloud for FakeCloud {
    async fn call(&self, request: &CloudRequest) -> anyhow::Result<CloudReply> {
        let mut state = self.state();
        let id = request.machine();
        let fence = request.fence();
        if let Some(newest) = state.fences.get(&id) {
            if fence.start_ms < *newest {
                return Ok(CloudReply::Stale {
                    newest: CloudFence {
                        holder: "newer".into(),
                        start_ms: *newest,
                    },
                });
            }
        }
        state.fences.insert(id, fence.start_ms);
        Ok(match request {
            CloudRequest::Instance { .. } => CloudReply::Instance {
                instance: state.instances.get(&id).cloned(),
            },
            CloudRequest::StartInstance { agent, .. } => {
                if state.failing.contains(&id) {
                    anyhow::bail!("no capacity for machine {id}");
                }
                if let Some(instance) = state.instances.get(&id) {
                    return Ok(CloudReply::Started {
                        instance: instance.clone(),
                        existing: true,
                    });
                }
                let instance = Instance {
                    id: format!("i-{id}"),
                    addresses: vec![format!("10.0.0.{id}")],
                };
                state.instances.insert(id, instance.clone());
                state.starts.push(id);
                state.passwords.insert(id, agent.password.clone());
                CloudReply::Started {
                    instance,
                    existing: false,
                }
            }
            CloudRequest::StopInstance { .. } => CloudReply::Stopped {
                existed: state.instances.remove(&id).is_some(),
            },
        })
    }
}

async fn exec(client: &mut Client, sql: &str) {
    client.exec(DATABASE, sql, &[]).await.expect(sql);
}

/// `(id, status, instance id, provisioned by)` of every machine row.
async fn machines(client: &mut Client) -> Vec<(i64, String, String, String)> {
    client
        .query(
            DATABASE,
            "SELECT id, status, instance_id, provisioned_by FROM machine ORDER BY id",
            &[],
        )
        .await
        .expect("machines")
        .rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [Value::Integer(id), Value::Text(status), Value::Text(instance), Value::Text(by)] => {
                (*id, status.clone(), instance.clone(), by.clone())
            }
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

async fn credential(client: &mut Client, name: &str) -> Option<String> {
    agent::identity::password_hash(client, name)
        .await
        .expect("credential read")
}

async fn grant(client: &mut Client, holder: &str) -> Fence {
    let key = LeaseKey::singular_controller();
    match lease::claim(client, &key, holder, Duration::from_secs(60))
        .await
        .expect("claim")
    {
        Claim::Held(held) => Fence {
            key,
            token: held.token,
        },
        Claim::Taken(other) => panic!("{holder} cannot claim: {other:?}"),
    }
}

fn started(ids: &[u32]) -> Round {
    Round::Done {
        started: ids.to_vec(),
        stopped: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_start_once_and_a_stale_token_starts_nothing() {
    let cluster = support::Cluster::start(45, 1).await;
    let mut client = cluster.client().await;
    schema::migrate(&mut client, "test", Duration::from_secs(30))
        .await
        .expect("schema");
    exec(
        &mut client,
        "INSERT INTO controller_config (key, value) VALUES ('controller-uuid', 'uuid-1')",
    )
    .await;
    exec(
        &mut client,
        "INSERT INTO controller_ca (id, cert_pem, key_pem, created_by) VALUES (1, 'PEM', 'KEY', 'test')",
    )
    .await;
    let cloud = FakeCloud::default();
    let a = grant(&mut client, "controller-0").await;

    // Machine 12 already runs: an earlier grant started it (with its credential) and died
    // before recording it. Machine 11 cannot be started by the cloud for now.
    exec(
        &mut client,
        "INSERT INTO machine (id, status, spaces) VALUES (10, 'pending', 'alpha'), \
         (11, 'pending', ''), (12, 'provisioning', '')",
    )
    .await;
    exec(
        &mut client,
        "INSERT INTO credential (name, password_hash) VALUES ('machine-12', 'earlier-hash')",
    )
    .await;
    {
        let mut state = cloud.state();
        state.instances.insert(
            12,
            Instance {
                id: "i-12".into(),
                addresses: Vec::new(),
            },
        );
        state.fences.insert(12, a.token.start_ms - 1);
        state.failing.insert(11);
    }
    let round = provisioner::round(&mut client, &a, &cloud)
        .await
        .expect("round");
    assert_eq!(round, started(&[10, 12]));
    assert_eq!(
        cloud.state().starts,
        [10],
        "12 was found, not started again"
    );
    let token = a.token.to_string();
    assert_eq!(
        machines(&mut client).await,
        [
            (10, "started".into(), "i-10".into(), token.clone()),
            (11, "provisioning".into(), String::new(), token.clone()),
            (12, "started".into(), "i-12".into(), token.clone()),
        ]
    );
    // The started machine's agent has the password whose hash is in the database; the
    // found one's credential is the earlier grant's, untouched.
    let password = cloud.state().passwords[&10].clone();
    let hash = credential(&mut client, "machine-10")
        .await
        .expect("a credential");
    assert!(agent::identity::verify_password(&password, &hash));
    assert_eq!(
        credential(&mut client, "machine-12").await.as_deref(),
        Some("earlier-hash")
    );

    // The cloud can start 11 now: the next round does, and only it.
    cloud.state().failing.clear();
    let round = provisioner::round(&mut client, &a, &cloud)
        .await
        .expect("round");
    assert_eq!(round, started(&[11]));
    assert_eq!(cloud.state().starts, [10, 11]);
    let round = provisioner::round(&mut client, &a, &cloud)
        .await
        .expect("round");
    assert_eq!(round, started(&[]), "nothing left to do");

    // Removal: the instance stops, the credential and the row go.
    exec(
        &mut client,
        "UPDATE machine SET status = 'dying' WHERE id = 10",
    )
    .await;
    let round = provisioner::round(&mut client, &a, &cloud)
        .await
        .expect("round");
    assert_eq!(
        round,
        Round::Done {
            started: Vec::new(),
            stopped: vec![10],
        }
    );
    assert!(!cloud.state().instances.contains_key(&10));
    assert_eq!(credential(&mut client, "machine-10").await, None);
    assert_eq!(
        machines(&mut client)
            .await
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        [11, 12]
    );

    // A grant that has ended: the database refuses its first write, nothing is started.
    exec(
        &mut client,
        "INSERT INTO machine (id, status, spaces) VALUES (13, 'pending', '')",
    )
    .await;
    assert!(lease::revoke(&mut client, &a.key, &a.token)
        .await
        .expect("revoke"));
    let round = provisioner::round(&mut client, &a, &cloud)
        .await
        .expect("round");
    assert!(matches!(round, Round::Stale(_)), "{round:?}");
    assert_eq!(machines(&mut client).await[2].1, "pending");

    // A holder whose token the cloud has seen superseded for a machine (a newer grant asked
    // about it) is refused by the cloud: marked, never started.
    let b = grant(&mut client, "controller-1").await;
    cloud.state().fences.insert(13, b.token.start_ms + 1000);
    let round = provisioner::round(&mut client, &b, &cloud)
        .await
        .expect("round");
    assert!(
        matches!(&round, Round::Stale(why) if why.contains("cloud refused")),
        "{round:?}"
    );
    assert_eq!(cloud.state().starts, [10, 11]);
    assert_eq!(credential(&mut client, "machine-13").await, None);
    let stale = Token {
        holder: b.token.holder.clone(),
        start_ms: b.token.start_ms,
    };
    assert_eq!(
        machines(&mut client).await[2],
        (13, "provisioning".into(), String::new(), stale.to_string())
    );
    cluster.stop().await;
}
