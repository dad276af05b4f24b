//! The lease store against a real one-node Dqlite cluster: claim, extend, revoke, expire,
//! pin and unpin, fenced writes refused after a grant ends, claimants racing for one
//! lease, and writes whose outcome is unknown (a reply lost after the write ran, or the
//! request lost before it was sent) read back to the right answer both ways. Expiry is only ever waited for (sleeping past it), never raced: a "still held"
//! check uses a lease of a minute.

mod support;

use std::time::Duration;

use agent::lease::{self, Claim, Fenced, FencedWrite, LeaseKey, Token, Transport};
use agent::schema;
use dqlite::client::{Client, Error as ClientError, ExecResult, Rows};
use dqlite::wire::Value;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(300);
/// Longer than [`SHORT`] by a wide margin: a short lease is surely over after it.
const PAST_SHORT: Duration = Duration::from_millis(700);

fn key(name: &str) -> LeaseKey {
    LeaseKey {
        kind: "test".into(),
        model: "m".into(),
        name: name.into(),
    }
}

async fn held(client: &mut Client, key: &LeaseKey, holder: &str, duration: Duration) -> Token {
    match lease::claim(client, key, holder, duration)
        .await
        .expect("claim")
    {
        Claim::Held(held) => {
            assert_eq!(held.token.holder, holder);
            held.token
        }
        Claim::Taken(other) => panic!("{holder} could not claim {key}: {other:?}"),
    }
}

async fn taken_by(client: &mut Client, key: &LeaseKey, holder: &str) -> Option<String> {
    match lease::claim(client, key, holder, LONG)
        .await
        .expect("claim")
    {
        Claim::Held(held) => panic!("{holder} claimed {key}, held: {held:?}"),
        Claim::Taken(other) => other.map(|lease| lease.token.holder),
    }
}

async fn fenced(client: &mut Client, key: &LeaseKey, token: &Token, seq: i64) -> Fenced {
    lease::log_fenced(client, key, token, seq, "test")
        .await
        .expect("fenced write")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_extend_revoke_expire_and_pin() {
    let cluster = support::Cluster::start(40, 1).await;
    let mut client = cluster.client().await;
    schema::migrate(&mut client, "test", Duration::from_secs(30))
        .await
        .expect("schema");

    // Claim, a second claimant refused, extend, fenced writes by the holder only.
    let one = key("one");
    let a = held(&mut client, &one, "a", LONG).await;
    assert_eq!(taken_by(&mut client, &one, "b").await.as_deref(), Some("a"));
    // Even the holder cannot claim what it holds: it extends.
    assert_eq!(taken_by(&mut client, &one, "a").await.as_deref(), Some("a"));
    let extended = lease::extend(&mut client, &one, &a, LONG)
        .await
        .expect("extend")
        .expect("extended");
    assert_eq!(extended.token, a);
    let forged = Token {
        holder: "b".into(),
        start_ms: a.start_ms,
    };
    assert_eq!(
        lease::extend(&mut client, &one, &forged, LONG)
            .await
            .expect("extend"),
        None
    );
    let old_start = Token {
        holder: "a".into(),
        start_ms: a.start_ms - 1,
    };
    assert_eq!(fenced(&mut client, &one, &a, 1).await, Fenced::Done);
    assert_eq!(fenced(&mut client, &one, &forged, 1).await, Fenced::Stale);
    assert_eq!(
        fenced(&mut client, &one, &old_start, 1).await,
        Fenced::Stale
    );

    // Revoke: the grant ends at once, once; its writes are refused; another can claim,
    // with a later start.
    assert!(lease::revoke(&mut client, &one, &a).await.expect("revoke"));
    assert!(!lease::revoke(&mut client, &one, &a).await.expect("revoke"));
    assert_eq!(fenced(&mut client, &one, &a, 2).await, Fenced::Stale);
    assert_eq!(
        lease::extend(&mut client, &one, &a, LONG)
            .await
            .expect("extend"),
        None
    );
    let b = held(&mut client, &one, "b", LONG).await;
    assert!(b.start_ms > a.start_ms, "{a} then {b}");
    // The same holder again after a revoke gets a new token, and the old one stays dead.
    assert!(lease::revoke(&mut client, &one, &b).await.expect("revoke"));
    let b2 = held(&mut client, &one, "b", LONG).await;
    assert!(b2.start_ms > b.start_ms, "{b} then {b2}");
    assert_eq!(fenced(&mut client, &one, &b, 1).await, Fenced::Stale);
    assert_eq!(fenced(&mut client, &one, &b2, 1).await, Fenced::Done);

    // Expiry: a short grant lapses by the database's clock; its holder's writes and its
    // extension are refused; expire removes the row; then anyone claims.
    let two = key("two");
    let c = held(&mut client, &two, "c", SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(fenced(&mut client, &two, &c, 1).await, Fenced::Stale);
    assert_eq!(
        lease::extend(&mut client, &two, &c, LONG)
            .await
            .expect("extend"),
        None
    );
    let lapsed = lease::read(&mut client, &two)
        .await
        .expect("read")
        .expect("row");
    assert!(!lapsed.is_held(), "{lapsed:?}");
    assert!(lease::expire(&mut client, &two).await.expect("expire"));
    assert!(!lease::expire(&mut client, &two).await.expect("expire"));
    assert_eq!(lease::read(&mut client, &two).await.expect("read"), None);
    let d = held(&mut client, &two, "d", LONG).await;
    // A held lease is not expired away.
    assert!(!lease::expire(&mut client, &two).await.expect("expire"));
    assert_eq!(fenced(&mut client, &two, &d, 1).await, Fenced::Done);

    // A lapsed grant is claimed over without expire, with a later start.
    let three = key("three");
    let e = held(&mut client, &three, "e", SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    let f = held(&mut client, &three, "f", LONG).await;
    assert!(f.start_ms > e.start_ms);
    assert_eq!(fenced(&mut client, &three, &e, 1).await, Fenced::Stale);

    // Pin: a pinned lease outlives its expiry (nobody claims it, its holder still writes,
    // expire leaves it); unpinned, it lapses at once.
    let four = key("four");
    let g = held(&mut client, &four, "g", SHORT).await;
    assert!(lease::set_pinned(&mut client, &four, true)
        .await
        .expect("pin"));
    assert!(!lease::set_pinned(&mut client, &four, true)
        .await
        .expect("pin"));
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        taken_by(&mut client, &four, "h").await.as_deref(),
        Some("g")
    );
    assert_eq!(fenced(&mut client, &four, &g, 1).await, Fenced::Done);
    assert!(!lease::expire(&mut client, &four).await.expect("expire"));
    let pinned = lease::read(&mut client, &four)
        .await
        .expect("read")
        .expect("row");
    assert!(pinned.pinned && pinned.is_held(), "{pinned:?}");
    assert!(lease::set_pinned(&mut client, &four, false)
        .await
        .expect("unpin"));
    assert!(!lease::set_pinned(&mut client, &four, false)
        .await
        .expect("unpin"));
    assert_eq!(fenced(&mut client, &four, &g, 2).await, Fenced::Stale);
    let h = held(&mut client, &four, "h", LONG).await;
    assert!(h.start_ms > g.start_ms);
    // A lease that does not hold cannot be pinned.
    let five = key("five");
    assert!(!lease::set_pinned(&mut client, &five, true)
        .await
        .expect("pin"));
    let i = held(&mut client, &five, "i", SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert!(!lease::set_pinned(&mut client, &five, true)
        .await
        .expect("pin"));
    assert_eq!(fenced(&mut client, &five, &i, 1).await, Fenced::Stale);

    // Every lease is listed with its holder; only the writes that passed are logged, in
    // one run per token.
    let leases = lease::list(&mut client).await.expect("list");
    let holders: Vec<(String, String, bool)> = leases
        .iter()
        .map(|l| (l.key.name.clone(), l.token.holder.clone(), l.is_held()))
        .collect();
    assert_eq!(
        holders,
        vec![
            ("five".into(), "i".into(), false),
            ("four".into(), "h".into(), true),
            ("one".into(), "b".into(), true),
            ("three".into(), "f".into(), true),
            ("two".into(), "d".into(), true),
        ]
    );
    let log = lease::fencing_log(&mut client, 0).await.expect("log");
    let tokens: Vec<&Token> = log.iter().map(|a| &a.token).collect();
    assert_eq!(tokens, vec![&a, &b2, &d, &g]);
    assert_eq!(lease::check_no_overlap(&log), Ok(4));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimants_racing_for_one_lease_get_one_grant() {
    let cluster = support::Cluster::start(41, 1).await;
    let mut client = cluster.client().await;
    schema::migrate(&mut client, "test", Duration::from_secs(30))
        .await
        .expect("schema");
    let race = key("race");
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(cluster.client().await);
    }
    let mut winners = Vec::new();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for (n, mut claimant) in clients.drain(..).enumerate() {
            let race = race.clone();
            tasks.push(tokio::spawn(async move {
                let holder = format!("claimant-{n}");
                let claim = lease::claim(&mut claimant, &race, &holder, LONG)
                    .await
                    .expect("claim");
                (claimant, holder, claim)
            }));
        }
        let mut granted = Vec::new();
        let mut refused_by = Vec::new();
        for task in tasks {
            let (claimant, holder, claim) = task.await.expect("claimant task");
            clients.push(claimant);
            match claim {
                Claim::Held(held) => granted.push((holder, held.token)),
                Claim::Taken(other) => {
                    refused_by.push(other.expect("a row").token.holder);
                }
            }
        }
        assert_eq!(granted.len(), 1, "round {round}: {granted:?}");
        let (winner, token) = granted.remove(0);
        assert_eq!(refused_by.len(), 5, "round {round}");
        assert!(refused_by.iter().all(|h| *h == winner), "{refused_by:?}");
        assert_eq!(fenced(&mut client, &race, &token, 1).await, Fenced::Done);
        assert!(lease::revoke(&mut client, &race, &token)
            .await
            .expect("revoke"));
        winners.push(token);
    }
    // Every grant's start is later than the one before.
    for pair in winners.windows(2) {
        assert!(pair[1].start_ms > pair[0].start_ms, "{winners:?}");
    }
    let log = lease::fencing_log(&mut client, 0).await.expect("log");
    assert_eq!(lease::check_no_overlap(&log), Ok(5));
    cluster.stop().await;
}

/// Which part of the next write is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lose {
    /// The write runs on the leader; its reply never arrives.
    Reply,
    /// The write is never sent (the connection died on the way out).
    Request,
}

/// The lease store's transport with a fault switch: the next write (and only it) loses its
/// reply or its request, and the caller sees `OutcomeUnknown`, as when the connection to
/// the leader dies mid-request. Reads pass untouched.
struct Lossy<'a> {
    client: &'a mut Client,
    next: Option<Lose>,
    /// Writes whose outcome this transport made unknown.
    lost: usize,
}

impl<'a> Lossy<'a> {
    fn new(client: &'a mut Client) -> Self {
        Self {
            client,
            next: None,
            lost: 0,
        }
    }

    fn arm(&mut self, lose: Lose) -> &mut Self {
        self.next = Some(lose);
        self
    }
}

impl Transport for Lossy<'_> {
    async fn exec(
        &mut self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecResult, ClientError> {
        let Some(lose) = self.next.take() else {
            return self.client.exec(database, sql, params).await;
        };
        if lose == Lose::Reply {
            self.client
                .exec(database, sql, params)
                .await
                .expect("the write whose reply is lost runs");
        }
        self.lost += 1;
        Err(ClientError::OutcomeUnknown {
            reason: "test: the connection died mid-request",
            source: Box::new(ClientError::Broken {
                address: "lossy transport".into(),
            }),
        })
    }

    async fn query(
        &mut self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Rows, ClientError> {
        self.client.query(database, sql, params).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_outcome_is_unknown_is_read_back_never_assumed() {
    let cluster = support::Cluster::start(44, 1).await;
    let mut client = cluster.client().await;
    schema::migrate(&mut client, "test", Duration::from_secs(30))
        .await
        .expect("schema");
    let mut observer = cluster.client().await;
    let mut lossy = Lossy::new(&mut client);

    // A claim that ran, its reply lost: read back as held, with the start the database gave.
    let ran = key("claim-ran");
    let sent = Instant::now();
    let claim = lease::claim(lossy.arm(Lose::Reply), &ran, "a", LONG)
        .await
        .expect("claim");
    let row = lease::read(&mut observer, &ran)
        .await
        .expect("read")
        .expect("the claim committed");
    match claim {
        Claim::Held(held) => {
            assert_eq!(held.token, row.token);
            // Acting is bounded by what the read-back saw, never by a guess.
            assert!(held.until <= Instant::now() + row.remaining() + Duration::from_secs(1));
            assert!(held.until > sent, "{held:?}");
        }
        Claim::Taken(other) => panic!("a committed claim read back as taken: {other:?}"),
    }

    // A claim never sent: read back as not held (no row), and nothing was written.
    let lost = key("claim-lost");
    let claim = lease::claim(lossy.arm(Lose::Request), &lost, "a", LONG)
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Taken(None));
    assert_eq!(lease::read(&mut observer, &lost).await.expect("read"), None);
    // ... and the lease is still free for the next claim.
    held(&mut observer, &lost, "b", LONG).await;

    // A claim of a lease somebody else holds: taken, whether its reply or its request was
    // lost (the statement ran and changed nothing, or never ran).
    for lose in [Lose::Reply, Lose::Request] {
        let claim = lease::claim(lossy.arm(lose), &lost, "a", LONG)
            .await
            .expect("claim");
        match claim {
            Claim::Taken(Some(other)) => assert_eq!(other.token.holder, "b", "{lose:?}"),
            other => panic!("{lose:?}: {other:?}"),
        }
    }

    // A short grant lapsed, then claimed again by its old holder with the reply lost: the
    // read-back gives the new grant (a new start), never the old token.
    let again = key("claim-again");
    let old = held(&mut observer, &again, "a", SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    match lease::claim(lossy.arm(Lose::Reply), &again, "a", LONG)
        .await
        .expect("claim")
    {
        Claim::Held(held) => assert!(held.token.start_ms > old.start_ms, "{old} {held:?}"),
        other => panic!("{other:?}"),
    }
    // The same after a lapse with the request lost: the old grant is over, so not held.
    let lapsed = key("claim-lapsed");
    held(&mut observer, &lapsed, "a", SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    match lease::claim(lossy.arm(Lose::Request), &lapsed, "a", LONG)
        .await
        .expect("claim")
    {
        Claim::Taken(Some(row)) => assert!(!row.is_held(), "{row:?}"),
        other => panic!("a lapsed grant read back as held: {other:?}"),
    }

    // Extensions: a lost reply after the extension ran, and a lost request, both still hold
    // (the grant is not over), each only as long as the row read back says.
    let ext = key("extend");
    let token = held(&mut observer, &ext, "a", Duration::from_secs(5)).await;
    let before = lease::read(&mut observer, &ext)
        .await
        .expect("read")
        .expect("row");
    let extended = lease::extend(lossy.arm(Lose::Reply), &ext, &token, LONG)
        .await
        .expect("extend")
        .expect("still held");
    let after = lease::read(&mut observer, &ext)
        .await
        .expect("read")
        .expect("row");
    assert!(after.expiry_ms > before.expiry_ms + 30_000, "{after:?}");
    assert_eq!(extended.token, token);
    let not_extended = lease::read(&mut observer, &ext)
        .await
        .expect("read")
        .expect("row");
    let held_until = lease::extend(lossy.arm(Lose::Request), &ext, &token, SHORT)
        .await
        .expect("extend")
        .expect("still held")
        .until;
    let unchanged = lease::read(&mut observer, &ext)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(unchanged.expiry_ms, not_extended.expiry_ms);
    assert!(
        held_until <= Instant::now() + SHORT,
        "bounded by the request's own duration"
    );
    // A lost extension of a grant that lapsed meanwhile is not held.
    let gone = key("extend-lapsed");
    let token = held(&mut observer, &gone, "a", SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    for lose in [Lose::Reply, Lose::Request] {
        assert_eq!(
            lease::extend(lossy.arm(lose), &gone, &token, LONG)
                .await
                .expect("extend"),
            None,
            "{lose:?}"
        );
    }

    // Fenced actions: a lost reply is found by (token, seq) and is done; a lost request is
    // not there and is not done.
    let fence = key("fence");
    let token = held(&mut observer, &fence, "a", LONG).await;
    let done = lease::log_fenced(lossy.arm(Lose::Reply), &fence, &token, 1, "ran")
        .await
        .expect("fenced");
    assert_eq!(done, Fenced::Done);
    let not_done = lease::log_fenced(lossy.arm(Lose::Request), &fence, &token, 2, "lost")
        .await
        .expect("fenced");
    assert_eq!(not_done, Fenced::Stale);
    let log = lease::fencing_log(&mut observer, 0).await.expect("log");
    let seqs: Vec<(i64, &str)> = log.iter().map(|a| (a.seq, a.action.as_str())).collect();
    assert_eq!(seqs, [(1, "ran")]);

    // A fenced statement (idempotent by contract) is sent again: after a lost reply its
    // resend changes nothing, and the lease read tells that apart from a stale token.
    observer
        .exec(
            schema::DATABASE,
            "CREATE TABLE item (id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
            &[],
        )
        .await
        .expect("table");
    observer
        .exec(
            schema::DATABASE,
            "INSERT INTO item (id, state) VALUES (1, 'new'), (2, 'new')",
            &[],
        )
        .await
        .expect("rows");
    let delete = format!(
        "DELETE FROM item WHERE id = ?6 AND {}",
        lease::holds_condition()
    );
    let outcome = lease::exec_fenced(
        lossy.arm(Lose::Reply),
        &fence,
        &token,
        &delete,
        &[Value::Integer(1)],
    )
    .await
    .expect("fenced delete");
    assert_eq!(
        outcome,
        FencedWrite::Applied(0),
        "the resend found it deleted"
    );
    let outcome = lease::exec_fenced(
        lossy.arm(Lose::Request),
        &fence,
        &token,
        &delete,
        &[Value::Integer(2)],
    )
    .await
    .expect("fenced delete");
    assert_eq!(outcome, FencedWrite::Applied(1), "the resend deleted it");
    let rows = observer
        .query(schema::DATABASE, "SELECT COUNT(*) FROM item", &[])
        .await
        .expect("count");
    assert_eq!(rows.rows, vec![vec![Value::Integer(0)]]);
    // A stale token: refused, with or without a lost reply.
    assert!(lease::revoke(&mut observer, &fence, &token)
        .await
        .expect("revoke"));
    observer
        .exec(
            schema::DATABASE,
            "INSERT INTO item (id, state) VALUES (3, 'new')",
            &[],
        )
        .await
        .expect("row");
    for lose in [Lose::Reply, Lose::Request] {
        let outcome = lease::exec_fenced(
            lossy.arm(lose),
            &fence,
            &token,
            &delete,
            &[Value::Integer(3)],
        )
        .await
        .expect("fenced delete");
        assert_eq!(outcome, FencedWrite::Stale, "{lose:?}");
    }
    assert_eq!(lossy.lost, 16, "every armed fault was hit");
    cluster.stop().await;
}
