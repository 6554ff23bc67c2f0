//! The event model through the ledger: lifecycle rules, versions, uids, batches,
//! idempotency and exclusivity. A refused command must write nothing.

use crate::support::*;
use action_ledger::event::*;
use action_ledger::ledger::StateStore;
use action_ledger::log::SimStorage;

fn ledger() -> action_ledger::ledger::Ledger {
    open_sim(&SimStorage::new(), 1 << 20).unwrap()
}

#[test]
fn happy_path_queued_running_completed() {
    // Goal: the full lifecycle folds into the snapshot the contract describes.
    let l = ledger();
    let a = submit(&l, create("acme", "1")).unwrap().actions[0].clone();
    assert_eq!((a.id, a.status, a.version), (1, Status::Queued, 1));
    assert_eq!(a.uid, "al-1");
    let a = submit(&l, event(1, EventBody::Started)).unwrap().actions[0].clone();
    assert_eq!(a.status, Status::Running);
    assert!(a.started_at.is_some());
    let a = submit(&l, event(1, progress(40.0))).unwrap().actions[0].clone();
    assert_eq!((a.progress, a.version), (40.0, 3));
    let a = submit(
        &l,
        event(
            1,
            EventBody::EventStarted {
                name: "compute_snapshot".into(),
                host: Some("cmp-1".into()),
            },
        ),
    )
    .unwrap()
    .actions[0]
        .clone();
    assert_eq!(a.events.len(), 1);
    assert_eq!(
        code(submit(&l, event(1, EventBody::Completed { message: None }))),
        "invalid_transition",
        "completing with an open sub-event is refused"
    );
    submit(
        &l,
        event(
            1,
            EventBody::EventFinished {
                name: "compute_snapshot".into(),
                result: SubResult::Success,
                traceback: None,
                details: None,
            },
        ),
    )
    .unwrap();
    let c = submit(&l, event(1, EventBody::Completed { message: None })).unwrap();
    let a = &c.actions[0];
    assert_eq!(
        (a.status, a.progress, a.version),
        (Status::Completed, 100.0, 6)
    );
    assert!(a.completed_at.is_some());
    assert_eq!(c.position, 6);
}

#[test]
fn nothing_after_terminal_and_refusals_write_nothing() {
    // Goal: every refused command leaves the log position where it was.
    let l = ledger();
    submit(&l, create("acme", "1")).unwrap();
    let before = l.committed_position();
    assert_eq!(
        code(submit(&l, event(1, EventBody::Completed { message: None }))),
        "invalid_transition",
        "queued → completed skips running"
    );
    assert_eq!(code(submit(&l, event(1, progress(101.0)))), "bad_request");
    assert_eq!(
        code(submit(&l, event(1, progress(f64::NAN)))),
        "bad_request"
    );
    assert_eq!(code(submit(&l, event(1, progress(-0.5)))), "bad_request");
    assert_eq!(code(submit(&l, event(99, EventBody::Started))), "not_found");
    assert_eq!(
        code(submit(
            &l,
            event(
                1,
                EventBody::EventFinished {
                    name: "never".into(),
                    result: SubResult::Error,
                    traceback: None,
                    details: None
                }
            )
        )),
        "invalid_transition"
    );
    assert_eq!(l.committed_position(), before);
    submit(
        &l,
        event(
            1,
            EventBody::Failed {
                error: ErrorInfo {
                    code: "boom".into(),
                    message: "disk on fire".into(),
                },
            },
        ),
    )
    .unwrap();
    for body in [
        EventBody::Started,
        progress(10.0),
        EventBody::Heartbeat,
        EventBody::CancelRequested,
        EventBody::Cancelled { message: None },
        EventBody::Completed { message: None },
    ] {
        assert_eq!(code(submit(&l, event(1, body))), "invalid_transition");
    }
    assert_eq!(l.committed_position(), before + 1);
}

#[test]
fn expected_version_is_checked() {
    let l = ledger();
    submit(&l, create("acme", "1")).unwrap();
    let stale = Command::Event(RecordEvent {
        action: ActionRef::Id(1),
        expected_version: Some(7),
        body: EventBody::Started,
    });
    assert_eq!(code(submit(&l, stale)), "version_conflict");
    let fresh = Command::Event(RecordEvent {
        action: ActionRef::Uid("al-1".into()),
        expected_version: Some(1),
        body: EventBody::Started,
    });
    assert_eq!(submit(&l, fresh).unwrap().actions[0].version, 2);
}

#[test]
fn uids_are_unique_and_hidden_across_tenants() {
    let l = ledger();
    let mut c = CreateAction::new("acme", "reboot", "server", "s1");
    c.uid = Some("req-1".into());
    submit(&l, Command::Create(c.clone())).unwrap();
    match l.submit_blocking(submission(Some("acme"), vec![Command::Create(c.clone())])) {
        Err(action_ledger::ledger::LedgerError::Rejected(
            action_ledger::event::fold::Rejection::UidTaken { existing, .. },
        )) => assert_eq!(existing, Some(1)),
        other => panic!("{other:?}"),
    }
    let mut other = c.clone();
    other.tenant = "globex".into();
    match l.submit_blocking(submission(Some("globex"), vec![Command::Create(other)])) {
        Err(action_ledger::ledger::LedgerError::Rejected(
            action_ledger::event::fold::Rejection::UidTaken { existing, .. },
        )) => assert_eq!(existing, None, "another tenant's id is never revealed"),
        other => panic!("{other:?}"),
    }
    c.uid = Some("al-7".into());
    assert_eq!(code(submit(&l, Command::Create(c.clone()))), "bad_request");
    c.uid = Some("123".into());
    assert_eq!(code(submit(&l, Command::Create(c))), "bad_request");
}

#[test]
fn tenants_cannot_touch_each_other() {
    let l = ledger();
    submit(&l, create("acme", "1")).unwrap();
    let r = l.submit_blocking(submission(
        Some("globex"),
        vec![event(1, EventBody::Started)],
    ));
    assert_eq!(code(r), "not_found");
    let r = l.submit_blocking(submission(Some("globex"), vec![create("acme", "2")]));
    assert_eq!(code(r), "bad_request");
}

#[test]
fn batch_is_all_or_nothing_and_sees_its_own_creates() {
    let l = ledger();
    let ok = l
        .submit_blocking(submission(
            None,
            vec![
                create("acme", "1"),
                event(1, EventBody::Started),
                event(1, progress(5.0)),
            ],
        ))
        .unwrap();
    assert_eq!(ok.position, 1, "one submission is one record");
    assert_eq!(ok.actions.len(), 3);
    assert_eq!(ok.actions[2].version, 3);
    let before = l.committed_position();
    let bad = l.submit_blocking(submission(
        None,
        vec![
            create("acme", "2"),
            event(2, EventBody::Completed { message: None }),
        ],
    ));
    // The refusal names the command (from 0).
    assert!(
        matches!(
            &bad,
            Err(action_ledger::ledger::LedgerError::CommandRejected { index: 1, .. })
        ),
        "{bad:?}"
    );
    assert_eq!(code(bad), "invalid_transition");
    assert_eq!(l.committed_position(), before);
    // The refused batch's id was not consumed.
    assert_eq!(submit(&l, create("acme", "3")).unwrap().actions[0].id, 2);
    assert_eq!(
        code(l.submit_blocking(submission(None, vec![]))),
        "bad_request"
    );
}

#[test]
fn idempotency_key_returns_first_answer() {
    let l = ledger();
    let stamp = |digest: u8| IdempotencyStamp {
        tenant: "acme".into(),
        key: "k1".into(),
        request_digest: [digest; 32],
    };
    let mut s = submission(Some("acme"), vec![create("acme", "1")]);
    s.idempotency = Some(stamp(1));
    let first = l.submit_blocking(s.clone()).unwrap();
    let again = l.submit_blocking(s.clone()).unwrap();
    assert!(again.replayed);
    assert_eq!(again.actions, first.actions);
    assert_eq!(
        l.committed_position(),
        first.position,
        "a repeat records nothing"
    );
    s.idempotency = Some(stamp(2));
    assert_eq!(code(l.submit_blocking(s)), "idempotency_key_reused");
}

#[test]
fn exclusive_create_refused_while_busy() {
    let l = ledger();
    let mut c = CreateAction::new("acme", "reboot", "droplet", "7");
    c.exclusive = true;
    c.status = InitialStatus::Running;
    submit(&l, Command::Create(c.clone())).unwrap();
    match submit(&l, Command::Create(c.clone())) {
        Err(action_ledger::ledger::LedgerError::Rejected(
            action_ledger::event::fold::Rejection::ResourceBusy { blocking, .. },
        )) => assert_eq!(blocking, 1),
        other => panic!("{other:?}"),
    }
    // Another tenant's droplet 7 is another resource.
    let mut g = c.clone();
    g.tenant = "globex".into();
    submit(&l, Command::Create(g)).unwrap();
    submit(&l, event(1, EventBody::Completed { message: None })).unwrap();
    assert_eq!(submit(&l, Command::Create(c)).unwrap().actions[0].id, 3);
}

#[test]
fn racing_exclusive_creates_have_one_winner() {
    // Goal: many threads race for one resource; exactly one wins.
    let l = std::sync::Arc::new(ledger());
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut c = CreateAction::new("acme", "reboot", "droplet", "9");
                c.exclusive = true;
                submit(&l, Command::Create(c)).is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
}

#[test]
fn state_survives_reopen() {
    // Goal: closing and reopening folds the log back to the same snapshots.
    let sim = SimStorage::new();
    let before = {
        let l = open_sim(&sim, 512).unwrap();
        for i in 0..20 {
            submit(&l, create("acme", &i.to_string())).unwrap();
            submit(&l, event(i + 1, EventBody::Started)).unwrap();
        }
        let snap: Vec<_> = (1..=20).map(|id| l.store().action(id).unwrap()).collect();
        l.close();
        snap
    };
    let l = open_sim(&sim, 512).unwrap();
    assert!(l.recovery().segments.len() > 1, "small segments rotated");
    let after: Vec<_> = (1..=20).map(|id| l.store().action(id).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(submit(&l, create("acme", "x")).unwrap().actions[0].id, 21);
}

#[test]
fn idempotent_repeat_in_the_same_batch_waits_for_the_fsync() {
    // Regression: a repeat whose original is in the batch being built was answered before
    // that batch's fdatasync. With the fsync failing, neither may be acknowledged.
    let sim = SimStorage::new();
    let l = std::sync::Arc::new(open_sim(&sim, 1 << 20).unwrap());
    submit(&l, create("acme", "0")).unwrap();
    let mut s = submission(Some("acme"), vec![create("acme", "1")]);
    s.idempotency = Some(IdempotencyStamp {
        tenant: "acme".into(),
        key: "k".into(),
        request_digest: [1; 32],
    });
    // Every disk operation from now on fails: the next batch cannot be made durable.
    sim.fail_op(1, std::io::ErrorKind::Other, true);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (l, s) = (l.clone(), s.clone());
            std::thread::spawn(move || l.submit_blocking(s))
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert!(r.is_err(), "acknowledged without a durable fsync: {r:?}");
    }
}

/// A store whose apply takes `delay`: batches stay written-but-not-applied long enough for
/// the writer to validate the next ones against their overlays.
struct SlowStore {
    inner: action_ledger::ledger::memory::MemoryStore,
    delay: std::time::Duration,
    /// The positions each `apply` call was given, call by call (catch-up at open calls it
    /// with none: not recorded).
    applies: std::sync::Mutex<Vec<Vec<u64>>>,
}

impl SlowStore {
    fn new(delay: std::time::Duration) -> SlowStore {
        SlowStore {
            inner: action_ledger::ledger::memory::MemoryStore::new(),
            delay,
            applies: Default::default(),
        }
    }
}

impl StateStore for SlowStore {
    fn action(&self, id: ActionId) -> Result<Option<Action>, action_ledger::ledger::StoreError> {
        self.inner.action(id)
    }
    fn id_for_uid(&self, uid: &str) -> Result<Option<ActionId>, action_ledger::ledger::StoreError> {
        self.inner.id_for_uid(uid)
    }
    fn exclusive_holder(
        &self,
        tenant: &str,
        resource: &ResourceRef,
    ) -> Result<Option<ActionId>, action_ledger::ledger::StoreError> {
        self.inner.exclusive_holder(tenant, resource)
    }
    fn idempotent_result(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<action_ledger::ledger::IdempotentResult>, action_ledger::ledger::StoreError>
    {
        self.inner.idempotent_result(tenant, key)
    }
    fn max_action_id(&self) -> Result<ActionId, action_ledger::ledger::StoreError> {
        self.inner.max_action_id()
    }
    fn applied_position(&self) -> u64 {
        self.inner.applied_position()
    }
    fn apply(
        &self,
        entries: &[action_ledger::ledger::CommittedEntry],
    ) -> Result<(), action_ledger::ledger::StoreError> {
        if !entries.is_empty() {
            self.applies
                .lock()
                .unwrap()
                .push(entries.iter().map(|e| e.position).collect());
        }
        std::thread::sleep(self.delay);
        self.inner.apply(entries)
    }
}

#[test]
fn written_but_unapplied_batches_decide_the_next_ones() {
    // Goal: the writer validates batch N+1 while batch N is still being applied; every rule
    // (uid, exclusive, versions, idempotency) must see batch N, and no answer may precede
    // the answer of what it depends on.
    let store = std::sync::Arc::new(SlowStore::new(std::time::Duration::from_millis(300)));
    let l = std::sync::Arc::new(open_sim_with(&SimStorage::new(), 1 << 20, store.clone()).unwrap());
    let mut first = CreateAction::new("acme", "reboot", "vm", "7");
    first.uid = Some("u-1".into());
    first.exclusive = true;
    let mut original = submission(Some("acme"), vec![Command::Create(first.clone())]);
    original.idempotency = Some(IdempotencyStamp {
        tenant: "acme".into(),
        key: "k".into(),
        request_digest: [3; 32],
    });
    // Each answer comes with the store's applied position when it arrived: the applier
    // answers a batch only after applying it, so an answer that depends on batch N must
    // arrive with N applied. (The two callers' wake-up times cannot tell: the threads the
    // answers wake may run in either order.)
    let spawn = |s: Submission| {
        let (l, store) = (l.clone(), store.clone());
        std::thread::spawn(move || {
            let r = l.submit_blocking(s);
            (r, store.applied_position())
        })
    };
    let a = spawn(original.clone());
    // Wait until the create is durable; its apply then still has ~300 ms to go.
    while l.stats().records.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(
        store.applied_position(),
        0,
        "the create is written, not applied"
    );
    let mut same_uid = CreateAction::new("acme", "reboot", "vm", "8");
    same_uid.uid = Some("u-1".into());
    let started = Command::Event(RecordEvent {
        action: ActionRef::Uid("u-1".into()),
        expected_version: Some(1),
        body: EventBody::Started,
    });
    let mut same_resource = first.clone();
    same_resource.uid = None;
    let busy = spawn(submission(
        Some("acme"),
        vec![Command::Create(same_resource)],
    ));
    let taken = spawn(submission(Some("acme"), vec![Command::Create(same_uid)]));
    let repeat = spawn(original);
    let start = spawn(submission(Some("acme"), vec![started]));

    let (a, _) = a.join().unwrap();
    let a = a.unwrap();
    assert_eq!(code(busy.join().unwrap().0), "resource_busy");
    assert_eq!(code(taken.join().unwrap().0), "uid_taken");
    let (repeat, applied_when_repeated) = repeat.join().unwrap();
    let repeat = repeat.unwrap();
    assert!(repeat.replayed);
    assert_eq!((repeat.position, &repeat.actions), (a.position, &a.actions));
    assert!(
        applied_when_repeated >= a.position,
        "the repeat was answered before the original"
    );
    let (start, _) = start.join().unwrap();
    let start = start.unwrap();
    assert_eq!(
        (
            start.actions[0].id,
            start.actions[0].status,
            start.actions[0].version
        ),
        (a.actions[0].id, Status::Running, 2)
    );
    // Answered means applied: the store shows the event.
    assert_eq!(
        store.action(a.actions[0].id).unwrap().unwrap().status,
        Status::Running
    );
}

#[test]
fn batches_queued_behind_a_slow_apply_are_applied_together_in_order() {
    // Goal: commit batches that wait while the applier is busy reach the store in one apply
    // (one sled batch in production), in log order, and each caller is answered only after
    // its batch is applied.
    let store = std::sync::Arc::new(SlowStore::new(std::time::Duration::from_millis(500)));
    let l = std::sync::Arc::new(open_sim_with(&SimStorage::new(), 1 << 20, store.clone()).unwrap());
    let durable = |n: u64| {
        while l.stats().records.load(std::sync::atomic::Ordering::Relaxed) < n {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    let spawn = |resource: &str| {
        let (l, s) = (
            l.clone(),
            submission(Some("acme"), vec![create("acme", resource)]),
        );
        std::thread::spawn(move || l.submit_blocking(s))
    };
    // The first batch is being applied (500 ms) while the next two are written, one at a time.
    let first = spawn("0");
    durable(1);
    while store.applies.lock().unwrap().is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let second = spawn("1");
    durable(2);
    let third = spawn("2");
    durable(3);
    assert_eq!(store.applied_position(), 0, "nothing applied yet");

    let answers: Vec<action_ledger::ledger::Committed> = [first, second, third]
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let positions: Vec<u64> = answers.iter().map(|c| c.position).collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert_eq!(
        *store.applies.lock().unwrap(),
        vec![vec![1], vec![2, 3]],
        "the two batches written during the first apply went to the store together"
    );
    for c in &answers {
        let id = c.actions[0].id;
        assert_eq!(
            store.action(id).unwrap().unwrap(),
            c.actions[0],
            "answered before applied"
        );
    }
}
