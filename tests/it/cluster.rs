//! The cluster log in PostgreSQL (src/cluster): schema, lease, the fenced append, reads,
//! the leadership task and the follower's local replica.
//! Each test runs against its own fresh database on the throwaway server of [`crate::pg`].

use crate::pg;
use action_ledger::cluster::schema::SCHEMA_VERSION;
use action_ledger::cluster::{
    check_chain, Acquire, ClusterError, ClusterLog, ClusterOptions, Head, Leadership, Lease,
    Replica, ReplicaError, ReplicaHead, ReplicaOptions, Role, StepDown, StepDownReason,
    NOTIFY_CHANNEL,
};
use action_ledger::event::codec::entry_record;
use action_ledger::log::format::GENESIS_DIGEST;
use action_ledger::log::writer::NewRecord;
use action_ledger::log::{FsStorage, LogConfig, LogWriter};
use std::sync::Arc;
use std::time::Duration;

/// A short lease, so tests that wait for one to run out wait well under a second.
const SHORT_TTL: Duration = Duration::from_millis(150);
/// Upper bound on any single cluster call in these tests: a hang guard, not a timing claim.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn options(url: &str, node: &str) -> ClusterOptions {
    let mut o = ClusterOptions::new(url, node);
    o.advertise_url = format!("http://{node}.invalid:8080");
    o
}

async fn connect(url: &str, node: &str) -> ClusterLog {
    ClusterLog::connect(options(url, node))
        .await
        .unwrap_or_else(|e| panic!("connect {node}: {e}"))
}

async fn connect_ttl(url: &str, node: &str, ttl: Duration) -> ClusterLog {
    let mut o = options(url, node);
    o.lease_ttl = ttl;
    ClusterLog::connect(o).await.expect("connect")
}

async fn acquire(log: &ClusterLog) -> (Lease, Head) {
    match log.acquire_lease().await.expect("acquire") {
        Acquire::Acquired { lease, head } => (lease, head),
        Acquire::HeldBy(info) => panic!("lease held by {info:?}"),
    }
}

fn payloads(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag}-{i}-{}", "x".repeat(i * 7)).into_bytes())
        .collect()
}

fn records(p: &[Vec<u8>]) -> Vec<NewRecord<'_>> {
    p.iter().map(|p| entry_record(p)).collect()
}

async fn count_rows(log: &ClusterLog) -> i64 {
    log.client()
        .query_one("SELECT count(*) FROM ledger_log", &[])
        .await
        .expect("count")
        .get(0)
}

/// Makes the current lease run out now (as time passing would), on PostgreSQL's clock.
fn expire_lease(url: &str) {
    let db = url.rsplit('/').next().expect("database name");
    pg::server().psql(
        db,
        "UPDATE ledger_lease SET expires_at = now() - interval '1 millisecond'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let url = pg::fresh_db();
    // Several nodes starting at once all get the one schema.
    let nodes = futures_util::future::join_all(
        ["a", "b", "c", "d"].map(|n| ClusterLog::connect(options(&url, n))),
    )
    .await;
    for n in &nodes {
        assert!(n.is_ok(), "{:?}", n.as_ref().err());
    }
    let log = nodes.into_iter().next().unwrap().unwrap();
    let version: i32 = log
        .client()
        .query_one("SELECT schema_version FROM ledger_meta", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let head = log.head().await.unwrap();
    assert_eq!(
        (head.position, head.digest, head.epoch),
        (0, GENESIS_DIGEST, 0)
    );
    let lease = log.lease().await.unwrap();
    assert_eq!((lease.epoch, lease.holder, lease.valid), (0, None, false));

    log.client()
        .execute(
            "UPDATE ledger_meta SET schema_version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    match ClusterLog::connect(options(&url, "e")).await {
        Err(ClusterError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test]
async fn digests_in_postgres_equal_the_embedded_log_writer_s() {
    let url = pg::fresh_db();
    let log = connect(&url, "a").await;
    let (lease, mut head) = acquire(&log).await;

    let dir = tempfile::tempdir().unwrap();
    let (mut writer, _) = LogWriter::open(
        Arc::new(FsStorage),
        LogConfig::new(dir.path().join("log")),
        &mut |_| Ok(()),
    )
    .unwrap();

    let mut embedded = Vec::new();
    for (b, size) in [1usize, 3, 1, 5, 2].into_iter().enumerate() {
        let p = payloads(&format!("batch{b}"), size);
        let recs = records(&p);
        let from_pg = log.append(&lease, &head, &recs).await.expect("append");
        let from_file = writer.append(&recs).expect("embedded append");
        assert_eq!(from_pg.len(), from_file.len());
        for (c, e) in from_pg.iter().zip(&from_file) {
            assert_eq!((c.position, c.digest), (e.position, e.digest));
        }
        embedded.extend(from_file);
        let last = from_pg.last().unwrap();
        head = Head {
            position: last.position,
            digest: last.digest,
            epoch: lease.epoch,
        };
    }
    assert_eq!(log.head().await.unwrap(), head);
    assert_eq!(writer.last_digest(), head.digest);

    // What a follower reads back continues the chain and carries the same digests.
    let stored = log.read_after(0, 1000).await.unwrap();
    assert_eq!(stored.len(), embedded.len());
    assert_eq!(
        check_chain(0, GENESIS_DIGEST, &stored).unwrap(),
        head.digest
    );
    for (s, e) in stored.iter().zip(&embedded) {
        assert_eq!((s.position, s.digest), (e.position, e.digest));
        assert_eq!(s.epoch, lease.epoch);
    }
    // Paging after a position.
    let tail = log.read_after(4, 2).await.unwrap();
    assert_eq!(
        tail.iter().map(|r| r.position).collect::<Vec<_>>(),
        vec![5, 6]
    );
    // A tampered record is caught by the chain check.
    let mut bad = stored.clone();
    bad[3].payload.push(b'!');
    assert!(matches!(
        check_chain(0, GENESIS_DIGEST, &bad),
        Err(ClusterError::ChainBroken { position: 4, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_of_one_epoch_get_gapless_positions_in_commit_order() {
    const APPENDERS: usize = 4;
    const BATCHES_EACH: usize = 20;
    let url = pg::fresh_db();
    let first = connect(&url, "leader").await;
    let (lease, _) = acquire(&first).await;
    let expected_total = (APPENDERS * BATCHES_EACH * 2) as u64;

    // A tailer reads after the last position it has seen, as a follower does: if a lower
    // position could commit after a higher one, it would see a gap here.
    let tail_url = url.clone();
    let tailer = tokio::spawn(async move {
        let log = connect(&tail_url, "tailer").await;
        let mut last = 0u64;
        let mut digest = GENESIS_DIGEST;
        while last < expected_total {
            let recs = log.read_after(last, 64).await.unwrap();
            if let Some(r) = recs.first() {
                assert_eq!(r.position, last + 1, "the tailer skipped a position");
            }
            digest = check_chain(last, digest, &recs).unwrap();
            last += recs.len() as u64;
            tokio::task::yield_now().await;
        }
        (last, digest)
    });

    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        let url = url.clone();
        let lease = lease.clone();
        tasks.push(tokio::spawn(async move {
            let log = connect(&url, "leader").await;
            let mut conflicts = 0u32;
            for b in 0..BATCHES_EACH {
                let p = payloads(&format!("a{a}b{b}"), 2);
                loop {
                    let head = log.head().await.unwrap();
                    match log.append(&lease, &head, &records(&p)).await {
                        Ok(done) => {
                            assert_eq!(done[0].position, head.position + 1);
                            break;
                        }
                        Err(ClusterError::HeadMoved { .. }) => conflicts += 1,
                        Err(e) => panic!("append: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        tokio::time::timeout(HANG_GUARD, t).await.unwrap().unwrap();
    }
    let (last, digest) = tokio::time::timeout(HANG_GUARD, tailer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last, expected_total);
    let head = first.head().await.unwrap();
    assert_eq!((head.position, head.digest), (last, digest));
    assert_eq!(count_rows(&first).await, expected_total as i64);
    // Each batch's records are contiguous: batch offsets run 0, 1 within every batch.
    let all = first.read_after(0, 4096).await.unwrap();
    for pair in all.chunks(2) {
        assert_eq!(
            pair.iter().map(|r| r.batch_offset).collect::<Vec<_>>(),
            [0, 1]
        );
    }
}

#[tokio::test]
async fn a_deposed_leader_appends_nothing_and_is_told_so() {
    let url = pg::fresh_db();
    let a = connect(&url, "a").await;
    let b = connect(&url, "b").await;
    let (lease_a, head) = acquire(&a).await;
    let appended = a
        .append(&lease_a, &head, &records(&payloads("a", 2)))
        .await
        .unwrap();
    let head_a = Head {
        position: 2,
        digest: appended[1].digest,
        epoch: lease_a.epoch,
    };

    // While a's lease runs, b cannot take it.
    match b.acquire_lease().await.unwrap() {
        Acquire::HeldBy(info) => {
            assert_eq!(info.holder.as_deref(), Some("a"));
            assert_eq!(info.epoch, lease_a.epoch);
            assert!(info.valid);
        }
        other => panic!("b took a live lease: {other:?}"),
    }

    expire_lease(&url);
    let (lease_b, head_b) = acquire(&b).await;
    assert_eq!(lease_b.epoch, lease_a.epoch + 1);
    assert_eq!((head_b.position, head_b.digest), (2, head_a.digest));

    // a, not knowing, appends after the head it knows: nothing is inserted.
    match a
        .append(&lease_a, &head_a, &records(&payloads("late", 3)))
        .await
    {
        Err(ClusterError::Deposed {
            epoch,
            current_epoch,
        }) => assert_eq!((epoch, current_epoch), (lease_a.epoch, lease_b.epoch)),
        other => panic!("expected Deposed, got {other:?}"),
    }
    assert!(matches!(
        a.renew_lease(&lease_a).await,
        Err(ClusterError::Deposed { .. })
    ));
    assert_eq!(count_rows(&a).await, 2);
    assert_eq!(a.head().await.unwrap().position, 2);

    // The new leader carries on from the same head.
    let done = b
        .append(&lease_b, &head_b, &records(&payloads("b", 1)))
        .await
        .unwrap();
    assert_eq!(done[0].position, 3);
    let all = b.read_after(0, 100).await.unwrap();
    check_chain(0, GENESIS_DIGEST, &all).unwrap();
    assert_eq!(
        all.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![lease_a.epoch, lease_a.epoch, lease_b.epoch]
    );
}

/// The race the fence exists for: a's append is already in flight (its lease still valid
/// when its statement started) and waits for the head row while another node's takeover
/// holds it; the takeover commits first, so a's append must insert nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_flight_during_a_takeover_inserts_nothing() {
    let url = pg::fresh_db();
    let a = connect(&url, "a").await;
    let (lease_a, head) = acquire(&a).await;

    // The takeover, held open inside a transaction (what the acquire statement does).
    let (mut raw, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = raw.transaction().await.unwrap();
    tx.batch_execute(
        "UPDATE ledger_lease SET epoch = epoch + 1, holder = 'b', \
             expires_at = now() + interval '1 minute' WHERE id = 1;
         UPDATE ledger_head SET epoch = epoch + 1 WHERE id = 1;",
    )
    .await
    .unwrap();

    let append = tokio::spawn(async move {
        let r = a
            .append(&lease_a, &head, &records(&payloads("in-flight", 2)))
            .await;
        (r, a)
    });
    // Wait until a's statement is blocked on the head row's lock.
    let watcher = connect(&url, "watcher").await;
    loop {
        let waiting: i64 = watcher
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE wait_event_type = 'Lock' AND query LIKE '%ledger_head%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();

    let (result, a) = tokio::time::timeout(HANG_GUARD, append)
        .await
        .unwrap()
        .unwrap();
    match result {
        Err(ClusterError::Deposed {
            epoch,
            current_epoch,
        }) => assert_eq!(current_epoch, epoch + 1),
        other => panic!("expected Deposed, got {other:?}"),
    }
    assert_eq!(count_rows(&a).await, 0);
    assert_eq!(a.head().await.unwrap().position, 0);
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_appends_nothing_then_gets_a_new_epoch() {
    let url = pg::fresh_db();
    let a = connect_ttl(&url, "a", SHORT_TTL).await;
    let (lease, head) = acquire(&a).await;
    let first = a
        .append(&lease, &head, &records(&payloads("before", 1)))
        .await
        .unwrap();
    let head = Head {
        position: 1,
        digest: first[0].digest,
        epoch: lease.epoch,
    };
    let renewed = a.renew_lease(&lease).await.unwrap();
    assert_eq!(renewed.epoch, lease.epoch);
    assert!(renewed.expires_at >= lease.expires_at);

    // The pause: real time passes beyond the lease on PostgreSQL's clock.
    tokio::time::sleep(SHORT_TTL * 3).await;
    match a
        .append(&lease, &head, &records(&payloads("after", 2)))
        .await
    {
        Err(ClusterError::LeaseExpired { epoch }) => assert_eq!(epoch, lease.epoch),
        other => panic!("expected LeaseExpired, got {other:?}"),
    }
    assert!(matches!(
        a.renew_lease(&lease).await,
        Err(ClusterError::LeaseExpired { .. })
    ));
    assert_eq!(count_rows(&a).await, 1);

    // Coming back means a new acquisition: a new epoch, never the old one again.
    let (again, head2) = acquire(&a).await;
    assert_eq!(again.epoch, lease.epoch + 1);
    assert_eq!((head2.position, head2.digest), (1, head.digest));
    assert!(matches!(
        a.append(&lease, &head2, &records(&payloads("old", 1)))
            .await,
        Err(ClusterError::Deposed { .. })
    ));
    a.append(&again, &head2, &records(&payloads("new", 1)))
        .await
        .unwrap();
    assert_eq!(count_rows(&a).await, 2);
}

#[tokio::test]
async fn epochs_only_increase_across_takeovers_and_along_the_log() {
    let url = pg::fresh_db();
    let nodes = [
        connect(&url, "n1").await,
        connect(&url, "n2").await,
        connect(&url, "n3").await,
    ];
    let mut epochs = Vec::new();
    for round in 0..6 {
        let node = &nodes[round % 3];
        if round > 0 {
            expire_lease(&url);
        }
        let (lease, head) = acquire(node).await;
        epochs.push(lease.epoch);
        let lease_now = node.lease().await.unwrap();
        assert_eq!(lease_now.epoch, lease.epoch);
        assert_eq!(node.head().await.unwrap().epoch, lease.epoch);
        node.append(&lease, &head, &records(&payloads(&format!("r{round}"), 2)))
            .await
            .unwrap();
    }
    assert!(
        epochs.windows(2).all(|w| w[1] == w[0] + 1),
        "epochs: {epochs:?}"
    );
    let all = nodes[0].read_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].epoch <= w[1].epoch));
    check_chain(0, GENESIS_DIGEST, &all).unwrap();
}

#[tokio::test]
async fn a_commit_notifies_the_new_head_position() {
    use futures_util::StreamExt;
    let url = pg::fresh_db();
    let log = connect(&url, "a").await;

    let (listener, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
        .unwrap();

    let (lease, head) = acquire(&log).await;
    log.append(&lease, &head, &records(&payloads("n", 3)))
        .await
        .unwrap();
    let got = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (NOTIFY_CHANNEL.to_string(), "3".to_string()));

    // A refused append notifies nothing: the next notification is the next real commit.
    expire_lease(&url);
    let head3 = log.head().await.unwrap();
    assert!(log
        .append(&lease, &head3, &records(&payloads("refused", 1)))
        .await
        .is_err());
    let (lease2, head3) = acquire(&log).await;
    log.append(&lease2, &head3, &records(&payloads("m", 2)))
        .await
        .unwrap();
    let got = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.1, "5");
}

#[tokio::test]
async fn a_bad_or_unreachable_cluster_log_is_a_clear_typed_error() {
    let guard = |o: ClusterOptions| async move {
        tokio::time::timeout(HANG_GUARD, ClusterLog::connect(o))
            .await
            .expect("connect did not give up")
    };
    let err = guard(options("not a url at all ://", "a")).await.err();
    assert!(matches!(err, Some(ClusterError::BadUrl(_))), "{err:?}");

    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = guard(options(
        &format!("postgres://postgres:secret@127.0.0.1:{port}/x"),
        "a",
    ))
    .await
    .err()
    .expect("connected to a closed port");
    let text = err.to_string();
    assert!(matches!(err, ClusterError::Connect { .. }), "{err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}/x")), "{text}");
    assert!(!text.contains("secret"), "the password leaked: {text}");

    // The server is there but the database is not.
    let url = pg::server().url("no_such_database");
    let err = guard(options(&url, "a")).await.err();
    assert!(matches!(err, Some(ClusterError::Connect { .. })), "{err:?}");

    // An address that never answers gives up after the connect timeout.
    let mut o = options("postgres://postgres@192.0.2.1:5432/x", "a");
    o.connect_timeout = Duration::from_millis(200);
    let err = guard(o).await.err();
    assert!(
        matches!(
            err,
            Some(ClusterError::ConnectTimeout { .. } | ClusterError::Connect { .. })
        ),
        "{err:?}"
    );

    // A lease time outside the named limits is refused before connecting.
    let mut o = options(&pg::fresh_db(), "a");
    o.lease_ttl = Duration::from_millis(1);
    assert!(matches!(guard(o).await.err(), Some(ClusterError::Limit(_))));
}

// ---------------------------------------------------------------------------------------
// Leadership: acquire, renew, step down.

/// The lease of the leadership tests: short, so a takeover waits well under a second.
const LEADER_TTL: Duration = Duration::from_millis(300);

fn options_ttl(url: &str, node: &str, ttl: Duration) -> ClusterOptions {
    let mut o = options(url, node);
    o.lease_ttl = ttl;
    o
}

async fn wait_role(l: &Leadership, pred: impl Fn(&Role) -> bool) -> Role {
    let mut rx = l.role();
    let role = tokio::time::timeout(HANG_GUARD, rx.wait_for(|r| pred(r)))
        .await
        .expect("the role did not change")
        .expect("the leadership task ended");
    role.clone()
}

async fn wait_leader(l: &Leadership) -> u64 {
    match wait_role(l, |r| matches!(r, Role::Leader { .. })).await {
        Role::Leader { epoch } => epoch,
        other => unreachable!("{other:?}"),
    }
}

async fn wait_step_down(l: &Leadership) -> StepDown {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Some(sd) = l.last_step_down() {
                return sd;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the leader never stepped down")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_leads_and_another_takes_over_with_the_next_epoch_after_it_dies() {
    let url = pg::fresh_db();
    let a = Leadership::start(options_ttl(&url, "a", LEADER_TTL));
    let epoch = wait_leader(&a).await;
    let b = Leadership::start(options_ttl(&url, "b", LEADER_TTL));
    let seen = wait_role(&b, |r| {
        matches!(
            r,
            Role::Follower {
                leader: Some(_),
                ..
            }
        )
    })
    .await;
    assert_eq!(
        seen,
        Role::Follower {
            leader: Some(("a".into(), "http://a.invalid:8080".into())),
            epoch
        }
    );
    assert!(b.term().is_none());

    // a keeps the lease across several lease times: it renews, b never gets in.
    tokio::time::sleep(LEADER_TTL * 4).await;
    assert_eq!(*a.role().borrow(), Role::Leader { epoch });
    assert_eq!(a.step_downs(), 0, "{:?}", a.last_step_down());
    assert_eq!(a.term().map(|t| t.lease.epoch), Some(epoch));
    assert!(matches!(*b.role().borrow(), Role::Follower { .. }));
    let probe = connect(&url, "probe").await;
    let lease = probe.lease().await.unwrap();
    assert_eq!((lease.epoch, lease.holder.as_deref()), (epoch, Some("a")));

    // a dies without a word (its lease is not released).
    let last = a.stop().await.expect("a led");
    let b_epoch = wait_leader(&b).await;
    let observed = std::time::Instant::now();
    assert_eq!(b_epoch, epoch + 1);
    // b could only take over once a's lease ran out on PostgreSQL's clock, which is after
    // the deadline a itself kept to.
    assert!(observed > last.lease.valid_until);
    let term = b.term().expect("b leads");
    assert_eq!(
        term.head,
        Head {
            epoch: b_epoch,
            ..probe.head().await.unwrap()
        }
    );
    let lease = probe.lease().await.unwrap();
    assert_eq!((lease.epoch, lease.holder.as_deref()), (b_epoch, Some("b")));
}

/// A leader whose connection to PostgreSQL is cut steps down at once, while its lease is
/// still valid (so PostgreSQL's fence alone would still let it append), and its writer,
/// which takes the term before every append, appends nothing with that epoch afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_connection_is_cut_steps_down_before_its_lease_expires() {
    let ttl = Duration::from_secs(2);
    let url = pg::fresh_db();
    let a = Arc::new(Leadership::start(options_ttl(&url, "a", ttl)));
    let epoch = wait_leader(&a).await;

    // a's writer: its own connection (same node id, another application name).
    let writer_log = ClusterLog::connect(options_ttl(
        &format!("{url}?application_name=a-writer"),
        "a",
        ttl,
    ))
    .await
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut appended = Vec::new();
            let mut head: Option<Head> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let before = std::time::Instant::now();
                if let Some(term) = a.term() {
                    let h = match head {
                        Some(h) if h.epoch == term.lease.epoch => h,
                        _ => term.head,
                    };
                    let p = payloads("w", 2);
                    if let Ok(done) = writer_log.append(&term.lease, &h, &records(&p)).await {
                        let last = done.last().unwrap();
                        head = Some(Head {
                            position: last.position,
                            digest: last.digest,
                            epoch: term.lease.epoch,
                        });
                        appended.push((term.lease.epoch, before));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            appended
        })
    };
    while count_rows(&connect(&url, "probe").await).await < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let probe = connect(&url, "probe").await;
    let killed: i64 = probe
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE application_name = 'action-ledger a' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);

    let sd = wait_step_down(&a).await;
    assert_eq!(sd.epoch, epoch);
    assert!(
        matches!(sd.reason, StepDownReason::ConnectionLost(_)),
        "{sd:?}"
    );
    // Before the deadline, which is before the lease's end on PostgreSQL's clock.
    assert!(sd.at < sd.deadline, "stepped down only at the deadline");
    assert!(a.term().is_none_or(|t| t.lease.epoch > epoch));

    // Let the writer run on for a while, then check:
    // every append of the old epoch took its term before the step-down.
    tokio::time::sleep(ttl / 5).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = tokio::time::timeout(HANG_GUARD, writer)
        .await
        .unwrap()
        .unwrap();
    let old: Vec<_> = appended.iter().filter(|(e, _)| *e == epoch).collect();
    assert!(!old.is_empty());
    assert!(old.iter().all(|(_, before)| *before < sd.at));
    assert!(appended.iter().all(|(e, _)| *e >= epoch));
    let all = probe.read_after(0, 4096).await.unwrap();
    check_chain(0, GENESIS_DIGEST, &all).unwrap();
    assert!(all.windows(2).all(|w| w[0].epoch <= w[1].epoch));
}

/// A renewal that cannot complete (here: the lease row is locked by another transaction,
/// as a stalled PostgreSQL would leave it) makes the leader step down at its local
/// deadline instead of waiting on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewal_hangs_steps_down_at_its_deadline() {
    let url = pg::fresh_db();
    let a = Leadership::start(options_ttl(&url, "a", LEADER_TTL));
    let epoch = wait_leader(&a).await;

    let (mut raw, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let tx = raw.transaction().await.unwrap();
    tx.batch_execute("SELECT 1 FROM ledger_lease WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();

    let sd = wait_step_down(&a).await;
    assert_eq!(sd.epoch, epoch);
    assert_eq!(sd.reason, StepDownReason::RenewalTimedOut);
    assert!(a.term().is_none());
    assert!(matches!(*a.role().borrow(), Role::Follower { .. }));

    // Once PostgreSQL answers again, a node leads again, with a new epoch.
    tx.rollback().await.unwrap();
    let again = wait_leader(&a).await;
    assert!(again > epoch);
}

// ---------------------------------------------------------------------------------------
// Replica: a follower's verified local copy of the cluster log.

/// A leader appending batches straight to the cluster log.
struct TestLeader {
    log: ClusterLog,
    lease: Lease,
    head: Head,
    batches: usize,
}

impl TestLeader {
    async fn start(url: &str) -> TestLeader {
        let mut o = options(url, "leader");
        o.lease_ttl = Duration::from_secs(60);
        let log = ClusterLog::connect(o).await.unwrap();
        let (lease, head) = acquire(&log).await;
        TestLeader {
            log,
            lease,
            head,
            batches: 0,
        }
    }

    /// Appends one batch of `size` records.
    async fn batch(&mut self, size: usize) {
        let p = payloads(&format!("batch{}", self.batches), size);
        let done = self
            .log
            .append(&self.lease, &self.head, &records(&p))
            .await
            .expect("append");
        let last = done.last().unwrap();
        self.head = Head {
            position: last.position,
            digest: last.digest,
            epoch: self.lease.epoch,
        };
        self.batches += 1;
    }
}

/// Batch sizes that include single records and batches longer than a small read page.
const SIZES: [usize; 8] = [1, 3, 1, 5, 2, 7, 1, 4];

fn replica_options(dir: &std::path::Path) -> ReplicaOptions {
    ReplicaOptions::new(LogConfig::new(dir.join("log")))
}

async fn open_replica(url: &str, ro: ReplicaOptions) -> Replica {
    Replica::open(options(url, "replica"), ro, Arc::new(FsStorage))
        .await
        .expect("open the replica")
}

/// Runs a replica until `stop` fires (or it fails); returns it closed, with `run`'s error.
fn spawn_replica(
    mut replica: Replica,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Option<ReplicaError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let outcome = tokio::select! {
            r = replica.run() => r.err(),
            _ = stopped => None,
        };
        replica.close().await;
        outcome
    });
    (stop, task)
}

async fn wait_applied(rx: &mut tokio::sync::watch::Receiver<ReplicaHead>, position: u64) {
    tokio::time::timeout(HANG_GUARD, rx.wait_for(|h| h.position >= position))
        .await
        .expect("the replica did not catch up")
        .expect("the replica stopped");
}

/// The local log passes the scan `verify` uses and holds exactly the cluster log's records.
async fn assert_replica_equals_cluster(dir: &std::path::Path, log: &ClusterLog) {
    let mut local = Vec::new();
    let summary = action_ledger::log::verify(&FsStorage, &dir.join("log"), &mut |r| {
        local.push((r.meta, r.digest, r.payload.to_vec()));
        Ok(())
    })
    .expect("the replica's local log verifies");
    assert!(summary.torn_tail.is_none());
    let head = log.head().await.unwrap();
    assert_eq!(
        (summary.last_position, summary.last_digest),
        (head.position, head.digest)
    );
    let mut remote = Vec::new();
    let mut after = 0;
    loop {
        let page = log.read_after(after, 4096).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        remote.extend(page);
    }
    assert_eq!(local.len(), remote.len());
    for ((meta, digest, payload), r) in local.iter().zip(&remote) {
        assert_eq!(*meta, r.meta());
        assert_eq!((*digest, payload), (r.digest, &r.payload));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_woken_by_notify_holds_the_cluster_log_s_records_and_head_digest() {
    let url = pg::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let mut leader = TestLeader::start(&url).await;
    leader.batch(2).await;
    // Polling is pushed out of reach: only notifications wake this replica.
    let mut ro = replica_options(dir.path());
    ro.poll_interval = HANG_GUARD * 10;
    let replica = open_replica(&url, ro).await;
    assert_eq!(replica.head().position, 0);
    let mut applied = replica.subscribe();
    let (stop, task) = spawn_replica(replica);
    wait_applied(&mut applied, 2).await;
    for (i, size) in SIZES.iter().cycle().take(20).enumerate() {
        leader.batch(*size).await;
        if i % 5 == 4 {
            // Sometimes the replica is idle when the next commit comes.
            wait_applied(&mut applied, leader.head.position).await;
        }
    }
    wait_applied(&mut applied, leader.head.position).await;
    assert_eq!(applied.borrow().digest, leader.head.digest);
    stop.send(()).unwrap();
    assert!(task.await.unwrap().is_none());
    assert_replica_equals_cluster(dir.path(), &leader.log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_listen_polling_alone_keeps_a_replica_up_to_date() {
    let url = pg::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let mut leader = TestLeader::start(&url).await;
    let mut ro = replica_options(dir.path());
    ro.listen = false;
    let replica = open_replica(&url, ro).await;
    let mut applied = replica.subscribe();
    let (stop, task) = spawn_replica(replica);
    for size in SIZES {
        leader.batch(size).await;
    }
    // Every notification of these commits went unheard.
    wait_applied(&mut applied, leader.head.position).await;
    leader.batch(3).await;
    wait_applied(&mut applied, leader.head.position).await;
    stop.send(()).unwrap();
    assert!(task.await.unwrap().is_none());
    assert_replica_equals_cluster(dir.path(), &leader.log).await;
}

/// A replica stopped while the leader keeps appending (maybe in the middle of a local
/// append, maybe with half a batch read) resumes from its local log: no gap, no duplicate.
/// Reads of 3 records split batches across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_midway_resumes_without_gaps_or_duplicates() {
    let url = pg::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let mut ro = replica_options(dir.path());
    ro.read_limit = 3;
    ro.poll_interval = Duration::from_millis(20);

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let leader_url = url.clone();
    let writer = tokio::spawn(async move {
        let mut leader = TestLeader::start(&leader_url).await;
        for size in SIZES.iter().cycle().take(40) {
            leader.batch(*size).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = done_tx.send(leader.head);
        leader
    });

    for round in 0..3u64 {
        let replica = open_replica(&url, ro.clone()).await;
        let resumed_at = replica.head().position;
        let mut applied = replica.subscribe();
        let (stop, task) = spawn_replica(replica);
        // Let it make some progress past where it resumed, then stop it.
        wait_applied(&mut applied, resumed_at + 1 + round).await;
        stop.send(()).unwrap();
        assert!(task.await.unwrap().is_none());
    }
    let final_head = tokio::time::timeout(HANG_GUARD, done_rx)
        .await
        .unwrap()
        .unwrap();
    let leader = writer.await.unwrap();
    let mut replica = open_replica(&url, ro.clone()).await;
    assert!(replica.head().position < final_head.position);
    replica.catch_up().await.unwrap();
    assert_eq!(
        (replica.head().position, replica.head().digest),
        (final_head.position, final_head.digest)
    );
    // Nothing more to read: catching up again appends nothing.
    assert_eq!(replica.catch_up().await.unwrap(), 0);
    replica.close().await;
    assert_replica_equals_cluster(dir.path(), &leader.log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_in_postgres_stops_the_replica_with_an_error_naming_its_position() {
    let url = pg::fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut leader = TestLeader::start(&url).await;
    for size in [2, 3] {
        leader.batch(size).await;
    }
    let mut replica = open_replica(&url, replica_options(dir.path())).await;
    replica.catch_up().await.unwrap();
    assert_eq!(replica.head().position, 5);

    for size in [1, 3, 2] {
        leader.batch(size).await;
    }
    // Position 8 (the middle of the 3-record batch) is rewritten in place.
    pg::server().psql(
        &db,
        "UPDATE ledger_log SET payload = payload || '\\x21'::bytea WHERE position = 8",
    );
    let mut applied = replica.subscribe();
    let (_stop, task) = spawn_replica(replica);
    let err = tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("the replica went on")
        .unwrap()
        .expect("the replica accepted a tampered record");
    assert!(
        matches!(
            err,
            ReplicaError::Cluster(ClusterError::ChainBroken { position: 8, .. })
        ),
        "{err}"
    );
    assert_eq!(err.position(), Some(8));
    assert!(err.to_string().contains("position 8"), "{err}");
    // Nothing at or after the break reached the local log, which still verifies.
    assert!(applied.borrow_and_update().position < 8);
    let summary =
        action_ledger::log::verify(&FsStorage, &dir.path().join("log"), &mut |_| Ok(())).unwrap();
    assert!(summary.last_position < 8);

    // A record missing in PostgreSQL is a gap, never skipped.
    pg::server().psql(&db, "UPDATE ledger_log SET payload = substring(payload from 1 for length(payload) - 1) WHERE position = 8");
    pg::server().psql(&db, "DELETE FROM ledger_log WHERE position = 7");
    let mut replica = open_replica(&url, replica_options(dir.path())).await;
    let err = replica.catch_up().await.unwrap_err();
    assert_eq!(err.position(), Some(8), "{err}");
    replica.close().await;

    // A local log of another cluster log (the same payloads, batched differently) is
    // refused at its head.
    let other = pg::fresh_db();
    let mut leader2 = TestLeader::start(&other).await;
    for size in [3, 4] {
        leader2.batch(size).await;
    }
    let err = Replica::open(
        options(&other, "replica"),
        replica_options(dir.path()),
        Arc::new(FsStorage),
    )
    .await
    .err()
    .expect("a foreign local log was accepted");
    assert!(
        matches!(err, ReplicaError::Diverged { position: 5, .. }),
        "{err}"
    );
}
