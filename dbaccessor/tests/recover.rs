//! The status socket's `probe` and `recover` requests against a real `dbaccessor` (the
//! operator surface's own loopback range, 127.41.20.0/24): the probe reports reachability
//! and a log position while the node runs; a recovery refused because a peer's log is
//! ahead restarts the node unchanged; a recovery that goes through keeps every row.

mod support;

use std::time::Duration;

use controller_contract::status::{LogPosition, NodeState, Probe, Recovered, Request};
use support::{insert_rows, read_rows, Controller};
use test_support::status::{self as client, ClientError};

async fn probe(controller: &Controller) -> Probe {
    client::request(
        &controller.status_socket(),
        &Request::Probe {
            log_position_only: false,
        },
        Duration::from_secs(10),
    )
    .await
    .expect("probe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_then_recover_refused_when_behind_then_done() {
    let ip = "127.41.20.1";
    let mut controller = Controller::new("0", ip);
    controller.write_map(&[("0", ip)]);
    controller.start().await;
    controller.wait_voters(1).await;
    insert_rows(&[controller.address()], 0, 5).await;

    let seen = probe(&controller).await;
    assert_eq!(seen.reachable.len(), 1);
    assert!(seen.reachable[0].reachable, "{seen:?}");
    let own = seen.log_position.expect("a running node's log position");
    assert!(own.index >= 6, "{own}");

    // A peer published a longer log: refused, and the node runs again unchanged. (The
    // log keeps moving after the probe: every node reports its progress into the cluster
    // once a second.)
    let ahead = LogPosition {
        term: own.term,
        index: own.index + 100_000,
    };
    let refused = client::request::<Recovered>(
        &controller.status_socket(),
        &Request::Recover {
            force: false,
            best_peer: Some(ahead),
        },
        Duration::from_secs(60),
    )
    .await;
    match refused {
        Err(ClientError::Refused(line)) => {
            assert!(
                line.contains(&format!("is behind another member's ({ahead})")),
                "{line}"
            );
            // One sentence for the operator: no runs of spaces from a broken continuation.
            assert!(
                line.contains("recover the most up-to-date member instead") && !line.contains("  "),
                "{line}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    controller.wait_voters(1).await;

    let recovered: Recovered = client::request(
        &controller.status_socket(),
        &Request::Recover {
            force: false,
            best_peer: Some(own),
        },
        Duration::from_secs(60),
    )
    .await
    .expect("recovered");
    assert_eq!(recovered.node_id, 1);
    assert!(recovered.log_position >= own, "{recovered:#?}");
    assert_eq!(recovered.status.state, NodeState::Member, "{recovered:#?}");
    assert_eq!(recovered.steps.len(), 4, "{:?}", recovered.steps);
    controller.wait_voters(1).await;
    assert_eq!(
        read_rows(&[controller.address()]).await,
        (0..5).collect::<Vec<_>>()
    );
    assert_eq!(controller.terminate(), Some(0));
}
