//! Scenarios of the application layer with real libdqlite nodes on loopback: bootstrap,
//! join, role management, hand-over, removal, restart, offline recovery and re-bind.

mod app_support;

use std::time::Duration;

use app_support::{address, all_rows, insert_rows, start, wait_for, wait_for_roles};
use dqlite::app::{self, App, AppError};
use dqlite::NodeRole::{Spare, StandBy, Voter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_become_voters_then_stand_bys_and_replace_a_lost_voter() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..5)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=5).map(|host| address(1, host)).collect();

    let first = start(dirs[0].path(), &a[0], &[]).await;
    assert_eq!(first.id(), 1, "the bootstrapping node takes id 1");
    wait_for_roles(&first, &[(&a[0], Voter)]).await;

    // Two nodes: one voter, the other a warm stand-by; three nodes: three voters.
    let second = start(dirs[1].path(), &a[1], &a[..1]).await;
    assert_ne!(
        second.id(),
        1,
        "a joining node never takes the bootstrap id"
    );
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], StandBy)]).await;
    let third = start(dirs[2].path(), &a[2], &a[..2]).await;
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], Voter), (&a[2], Voter)]).await;

    // The fourth and fifth become stand-bys.
    let joining = std::time::Instant::now();
    let fourth = start(dirs[3].path(), &a[3], &a[..1]).await;
    println!(
        "a fourth node started, joined and was ready in {:?}",
        joining.elapsed()
    );
    let fifth = start(dirs[4].path(), &a[4], &a[..1]).await;
    wait_for_roles(
        &first,
        &[
            (&a[0], Voter),
            (&a[1], Voter),
            (&a[2], Voter),
            (&a[3], StandBy),
            (&a[4], StandBy),
        ],
    )
    .await;

    let mut client = first.client().await.expect("a client");
    insert_rows(&mut client, 0..10).await;

    // A voter dies (no hand-over): a stand-by takes its vote, the dead one becomes a spare.
    third.stop_without_handover().await.expect("the node stops");
    wait_for(
        "a stand-by replacing the lost voter",
        Duration::from_secs(15),
        || async {
            let roles = app_support::roles(&first).await?;
            let voters = roles.values().filter(|r| **r == Voter).count();
            if voters == 3 && roles.get(&a[2]) == Some(&Spare) {
                Ok(())
            } else {
                Err(format!("{roles:?}"))
            }
        },
    )
    .await;
    insert_rows(&mut client, 10..20).await;
    assert_eq!(all_rows(&mut client).await, (0..20).collect::<Vec<_>>());

    for app in [fifth, fourth, second, first] {
        app.stop().await.expect("the node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_voter_is_never_removed() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=2).map(|host| address(2, host)).collect();
    let first = start(dirs[0].path(), &a[0], &[]).await;

    let refused = first.remove(first.id()).await;
    assert!(
        matches!(refused, Err(AppError::LastVoter { id: 1 })),
        "{refused:?}"
    );

    // With a stand-by beside it, the voter is still the last one.
    let second = start(dirs[1].path(), &a[1], &a[..1]).await;
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], StandBy)]).await;
    let refused = second.remove(first.id()).await;
    assert!(
        matches!(refused, Err(AppError::LastVoter { id: 1 })),
        "{refused:?}"
    );

    // The stand-by may go, and may come back.
    let second_id = second.id();
    second
        .stop_without_handover()
        .await
        .expect("the node stops");
    first
        .remove(second_id)
        .await
        .expect("the stand-by is removed");
    wait_for_roles(&first, &[(&a[0], Voter)]).await;
    let again = tempfile::tempdir().expect("a temp dir");
    let second = start(again.path(), &a[1], &a[..1]).await;
    assert_ne!(second.id(), second_id, "a re-added node has a new id");
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], StandBy)]).await;

    second.stop().await.expect("the node stops");
    first.stop().await.expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_over_and_writes_continue() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=4).map(|host| address(3, host)).collect();
    let mut apps = vec![start(dirs[0].path(), &a[0], &[]).await];
    for (dir, address) in dirs[1..].iter().zip(&a[1..]) {
        apps.push(start(dir.path(), address, &a[..1]).await);
    }
    wait_for_roles(
        &apps[0],
        &[
            (&a[0], Voter),
            (&a[1], Voter),
            (&a[2], Voter),
            (&a[3], StandBy),
        ],
    )
    .await;
    let mut client = apps[3].client().await.expect("a client");
    insert_rows(&mut client, 0..5).await;

    // The leader (whichever node it is: load can cause an election) stops: leadership and
    // its vote move first.
    let leader = apps[0]
        .leader()
        .await
        .expect("a leader")
        .expect("a leader is known");
    let index = apps
        .iter()
        .position(|app| app.id() == leader.id)
        .expect("a voter leads");
    let stopped = apps.remove(index);
    stopped.handover().await.expect("the hand-over");
    stopped.stop().await.expect("the leader stops");
    let roles = app_support::roles(&apps[0]).await.expect("the roles");
    assert_eq!(
        roles.get(&leader.address),
        Some(&Spare),
        "the stopped node handed its vote over: {roles:?}"
    );
    assert_eq!(
        roles.get(&a[3]),
        Some(&Voter),
        "the stand-by took the vote: {roles:?}"
    );
    let new_leader = apps[0]
        .leader()
        .await
        .expect("a leader")
        .expect("a leader is known");
    assert_ne!(new_leader.id, leader.id, "leadership moved");
    insert_rows(&mut client, 5..10).await;
    assert_eq!(all_rows(&mut client).await, (0..10).collect::<Vec<_>>());

    for app in apps {
        app.stop().await.expect("the node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restarts_from_its_persisted_state() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=3).map(|host| address(4, host)).collect();
    let mut apps = vec![start(dirs[0].path(), &a[0], &[]).await];
    apps.push(start(dirs[1].path(), &a[1], &a[..1]).await);
    apps.push(start(dirs[2].path(), &a[2], &a[..1]).await);
    wait_for_roles(&apps[0], &[(&a[0], Voter), (&a[1], Voter), (&a[2], Voter)]).await;
    let ids: Vec<u64> = apps.iter().map(App::id).collect();
    let mut client = apps[0].client().await.expect("a client");
    insert_rows(&mut client, 0..7).await;
    for app in apps {
        app.stop_without_handover().await.expect("the node stops");
    }

    // No peers given: each node finds the others in its persisted member list.
    let mut apps = Vec::new();
    for (dir, address) in dirs.iter().zip(&a) {
        apps.push(
            App::start(app_support::config(dir.path(), address, &[]))
                .await
                .expect("restart"),
        );
    }
    for app in &apps {
        app.ready(Duration::from_secs(15))
            .await
            .expect("ready after restart");
    }
    assert_eq!(
        apps.iter().map(App::id).collect::<Vec<_>>(),
        ids,
        "ids survive a restart"
    );
    let mut client = apps[1].client().await.expect("a client");
    app_support::wait_for_rows(&mut client, &(0..7).collect::<Vec<_>>()).await;

    // The persisted address is checked: a node configured with another one must re-bind.
    let last = apps.pop().expect("three apps");
    last.stop_without_handover().await.expect("the node stops");
    let moved = App::start(app_support::config(dirs[2].path(), &address(4, 9), &[])).await;
    assert!(
        matches!(
            moved,
            Err(AppError::Plan {
                source: app::PlanError::AddressChanged { .. },
                ..
            })
        ),
        "{:?}",
        moved.err()
    );
    for app in apps {
        app.stop_without_handover().await.expect("the node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrink_to_one_from_the_most_up_to_date_member_keeps_every_row() {
    let _serial = app_support::one_at_a_time().await;
    let dirs = app_support::temp_dirs(3);
    let a: Vec<String> = (1..=3).map(|host| address(5, host)).collect();
    let (first, second, third) = app_support::start_three_voters(&dirs, &a).await;
    let mut client = first.client().await.expect("a client");
    insert_rows(&mut client, 0..50).await;

    // The third node stops; one more row commits on the other two: the third is now behind.
    third.stop_without_handover().await.expect("the node stops");
    insert_rows(&mut client, 50..51).await;
    drop(client);
    second
        .stop_without_handover()
        .await
        .expect("the node stops");
    first.stop_without_handover().await.expect("the node stops");

    // The stale member is listed first: the choice must not fall on it.
    let candidates = [dirs[2].path().to_owned(), dirs[1].path().to_owned()];
    let (best, position) = app::choose_most_up_to_date(&candidates)
        .await
        .expect("a choice");
    assert_eq!(
        best,
        dirs[1].path(),
        "the up-to-date member is chosen (position {position:?})"
    );
    let stale =
        app::recover_checked(dirs[2].path(), &[], &[dirs[1].path().to_owned()], false).await;
    assert!(matches!(stale, Err(AppError::Behind { .. })), "{stale:?}");

    let identity = app::shrink_to_one(&best).await.expect("the recovery");
    assert_eq!(identity.address, a[1]);
    let alone = start(&best, &a[1], &[]).await;
    wait_for_roles(&alone, &[(&a[1], Voter)]).await;
    let mut client = alone.client().await.expect("a client");
    // Every committed row, once the restarted node has applied its log.
    app_support::wait_for_rows(&mut client, &(0..51).collect::<Vec<_>>()).await;
    alone.stop().await.expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_rebinds_to_a_new_address() {
    let _serial = app_support::one_at_a_time().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let old = address(6, 1);
    let new = address(6, 2);
    let node = start(dir.path(), &old, &[]).await;
    let mut client = node.client().await.expect("a client");
    insert_rows(&mut client, 0..3).await;
    drop(client);
    node.stop().await.expect("the node stops");

    let identity = app::rebind(dir.path(), &new).await.expect("the re-bind");
    assert_eq!((identity.id, identity.address.as_str()), (1, new.as_str()));
    let node = start(dir.path(), &new, &[]).await;
    wait_for_roles(&node, &[(&new, Voter)]).await;
    let mut client = node.client().await.expect("a client");
    app_support::wait_for_rows(&mut client, &[0, 1, 2]).await;
    node.stop().await.expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_voter_leaves_an_odd_count_and_rejoins_as_a_voter() {
    let _serial = app_support::one_at_a_time().await;
    let dirs = app_support::temp_dirs(4);
    let a: Vec<String> = (1..=3).map(|host| address(7, host)).collect();
    let (first, second, third) = app_support::start_three_voters(&dirs, &a).await;

    // The third goes for good: with two voters left, both would be needed, so one steps
    // down to stand-by.
    let third_id = third.id();
    third.stop_without_handover().await.expect("the node stops");
    first.remove(third_id).await.expect("the voter is removed");
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], StandBy)]).await;

    // Back with an empty data dir (a new id): three voters again.
    let third = start(dirs[3].path(), &a[2], &a[..1]).await;
    assert_ne!(third.id(), third_id);
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], Voter), (&a[2], Voter)]).await;
    for app in [third, second, first] {
        app.stop().await.expect("the node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_hands_over_to_its_stand_by() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=2).map(|host| address(8, host)).collect();
    let first = start(dirs[0].path(), &a[0], &[]).await;
    let second = start(dirs[1].path(), &a[1], &a[..1]).await;
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], StandBy)]).await;
    let mut client = second.client().await.expect("a client");
    insert_rows(&mut client, 0..3).await;

    // The voter stops: it makes the stand-by a voter, hands leadership to it, steps down.
    first.stop().await.expect("the node stops");
    wait_for_roles(&second, &[(&a[0], Spare), (&a[1], Voter)]).await;
    insert_rows(&mut client, 3..6).await;
    assert_eq!(all_rows(&mut client).await, (0..6).collect::<Vec<_>>());
    second.stop().await.expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_at_once_all_get_in() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=4).map(|host| address(9, host)).collect();
    let first = start(dirs[0].path(), &a[0], &[]).await;
    // Concurrent ADDs meet "a configuration change is already in progress": they retry.
    let (second, third, fourth) = tokio::join!(
        start(dirs[1].path(), &a[1], &a[..1]),
        start(dirs[2].path(), &a[2], &a[..1]),
        start(dirs[3].path(), &a[3], &a[..1]),
    );
    wait_for(
        "three voters and a stand-by",
        Duration::from_secs(15),
        || async {
            let roles = app_support::roles(&first).await?;
            let voters = roles.values().filter(|r| **r == Voter).count();
            let standbys = roles.values().filter(|r| **r == StandBy).count();
            if roles.len() == 4 && voters == 3 && standbys == 1 {
                Ok(())
            } else {
                Err(format!("{roles:?}"))
            }
        },
    )
    .await;
    for app in [fourth, third, second, first] {
        app.stop().await.expect("the node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_join_resumes_with_the_same_id() {
    let _serial = app_support::one_at_a_time().await;
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("a temp dir"))
        .collect();
    let a: Vec<String> = (1..=2).map(|host| address(10, host)).collect();

    // Nobody answers at the peer's address yet: the join times out.
    let mut config = app_support::config(dirs[1].path(), &a[1], &a[..1]);
    config.join_timeout = Duration::from_millis(300);
    let failed = App::start(config.clone()).await;
    let Err(AppError::JoinTimeout { id, .. }) = failed else {
        panic!("expected a join timeout, got {:?}", failed.err());
    };
    assert!(
        dirs[1].path().join(app::JOIN_FILE).exists(),
        "the join is still pending"
    );

    // The cluster appears; the same data dir joins with the id it persisted.
    let first = start(dirs[0].path(), &a[0], &[]).await;
    config.join_timeout = Duration::from_secs(15);
    let second = App::start(config).await.expect("the join resumes");
    second.ready(Duration::from_secs(15)).await.expect("ready");
    assert_eq!(second.id(), id, "the persisted id is kept");
    assert!(
        !dirs[1].path().join(app::JOIN_FILE).exists(),
        "the join is done"
    );
    wait_for_roles(&first, &[(&a[0], Voter), (&a[1], StandBy)]).await;
    second.stop().await.expect("the node stops");
    first.stop().await.expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_reuses_its_connections() {
    let _serial = app_support::one_at_a_time().await;
    let dirs = app_support::temp_dirs(3);
    let a: Vec<String> = (1..=3).map(|host| address(11, host)).collect();
    let (first, second, third) = app_support::start_three_voters(&dirs, &a).await;
    // Settled: every background round (every 100 ms on each node) and every status query
    // now has a connection to reuse.
    for app in [&first, &second, &third] {
        app.cluster().await.expect("the configuration");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = app_support::closed_connections(&a);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for app in [&first, &second, &third] {
        app.cluster().await.expect("the configuration");
        app.leader().await.expect("the leader");
    }
    let after = app_support::closed_connections(&a);
    let new: Vec<_> = after.difference(&before).collect();
    // Twenty rounds on three nodes, with the leader probing every member each round: a
    // cluster that opened a connection per request would close well over a hundred.
    assert!(
        new.len() <= 6,
        "{} connections to the nodes were opened and closed in 2 s of idling, e.g. {:?}",
        new.len(),
        &new[..new.len().min(5)]
    );

    for app in [third, second, first] {
        app.stop().await.expect("the node stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_leave_the_leader_alone_but_see_changes() {
    let _serial = app_support::one_at_a_time().await;
    let dirs = app_support::temp_dirs(4);
    let a: Vec<String> = (1..=4).map(|host| address(12, host)).collect();
    let (first, second, third) = app_support::start_three_voters(&dirs, &a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two seconds of rounds every 100 ms: the leader runs only full ones, the followers
    // ask the leader about once in five rounds.
    let before: Vec<_> = [&first, &second, &third].map(App::rounds).to_vec();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<_> = [&first, &second, &third].map(App::rounds).to_vec();
    let delta = |i: usize| {
        (
            after[i].full - before[i].full,
            after[i].quiet - before[i].quiet,
        )
    };
    let (full, quiet) = delta(0);
    // Twenty rounds each when the machine keeps pace; the bounds hold for fewer too.
    assert!(
        quiet == 0 && full >= 5,
        "the leader ran {full} full and {quiet} quiet rounds in 2 s"
    );
    for follower in [1, 2] {
        let (full, quiet) = delta(follower);
        assert!(
            full <= 7 && quiet >= 2 * full.max(1),
            "follower {follower} ran {full} full and {quiet} quiet rounds in 2 s"
        );
    }

    // A new member reaches the followers' persisted member lists within a few rounds.
    let fourth = start(dirs[3].path(), &a[3], &a[..1]).await;
    for dir in [dirs[1].path(), dirs[2].path()] {
        wait_for(
            "the new member in a follower's cluster.yaml",
            Duration::from_secs(3),
            || async {
                let listed = app::store::load(dir).map_err(|e| e.to_string())?;
                if listed.iter().any(|m| m.address == a[3]) {
                    Ok(())
                } else {
                    Err(format!("{listed:?}"))
                }
            },
        )
        .await;
    }

    // The leader stops and hands over: the new leader's rounds are full again at once.
    first.stop().await.expect("the node stops");
    let new_leader = wait_for("a new leader", Duration::from_secs(5), || async {
        match second.leader().await {
            Ok(Some(leader)) if leader.address != a[0] => Ok(leader.address),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let leader = if new_leader == a[1] { &second } else { &third };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = leader.rounds();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = leader.rounds();
    assert!(
        after.quiet == before.quiet && after.full >= before.full + 3,
        "the new leader ran {} full and {} quiet rounds in 1 s",
        after.full - before.full,
        after.quiet - before.quiet
    );

    for app in [fourth, third, second] {
        app.stop().await.expect("the node stops");
    }
}
