//! The sled projection: read-your-writes, queries, history and as-of, reopen, reset on a
//! foreign format, rebuild equivalence, verify, and crashes between the log append and the
//! projection apply.

use crate::projection_model::{with_seed, World};
use crate::support::*;
use action_ledger::event::*;
use action_ledger::ledger::{CommittedEntry, LedgerError, StateStore, StoreError};
use action_ledger::log::SimStorage;
use action_ledger::projection::{self, ActionQuery, AsOf, Page, Projection, QueryError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Every key of the projection in one of `families`, with its value, in key order.
/// Every key of `families` with its value, a pack's as its bytes (wherever it is stored:
/// sealed or not is a matter of when, see `values`).
fn keys_of(p: &Projection, families: &[u8]) -> Vec<(sled::IVec, sled::IVec)> {
    p.tree_for_tests()
        .iter()
        .map(|kv| kv.unwrap())
        .filter(|(k, _)| families.contains(&k[0]))
        .map(|(k, v)| match k[0] {
            projection::keys::P_PACK => {
                let bytes = p.pack_bytes_for_tests(&k, &v);
                (k, bytes.into())
            }
            _ => (k, v),
        })
        .collect()
}

/// Closes the ledger, rebuilds its projection in `dir` from the log, and checks that the
/// rebuilt projection holds the very keys and values of `families` the live one held.
fn rebuilt_with_the_same_keys(
    sim: &SimStorage,
    dir: &std::path::Path,
    l: impl std::borrow::Borrow<action_ledger::ledger::Ledger>,
    p: Arc<Projection>,
    families: &[u8],
) -> Projection {
    let live = keys_of(&p, families);
    l.borrow().close();
    drop(l);
    drop(p);
    let (p, _) =
        projection::rebuild(sim, &log_dir(), dir, &projection_config(), &mut |_| {}).unwrap();
    assert_eq!(
        keys_of(&p, families),
        live,
        "the rebuilt layout is the live one"
    );
    p
}

fn q_tenant(t: &str, limit: usize) -> ActionQuery {
    ActionQuery {
        tenant: Some(t.into()),
        limit,
        ..Default::default()
    }
}

#[test]
fn the_write_back_reaches_sled_on_its_own_once_the_applier_is_idle() {
    // Goal: what `apply` leaves in the write-back goes to sled within moments of the
    // applier going idle, without any read asking for it; sled's applied position is then
    // the last one applied.
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let p = open_projection(&tmp.path().join("p"));
    let l = open_sim_with(&sim, 1 << 20, p.clone()).unwrap();
    let id = submit(&l, create("acme", "1")).unwrap().actions[0].id;
    submit(&l, event(id, EventBody::Started)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while p.unwritten() {
        assert!(
            std::time::Instant::now() < deadline,
            "the write-back still holds writes"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let raw = p
        .tree_for_tests()
        .get(projection::keys::META_APPLIED)
        .unwrap()
        .expect("an applied position in sled");
    assert_eq!(
        u64::from_be_bytes(raw.as_ref().try_into().unwrap()),
        p.applied_position()
    );
    assert_eq!(p.applied_position(), 2);
}

#[test]
fn read_your_writes_and_basic_queries() {
    // Goal: an acknowledged write is visible to get, get_by_uid and list at once.
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let p = open_projection(&tmp.path().join("p"));
    let l = open_sim_with(&sim, 1 << 20, p.clone()).unwrap();
    for i in 0..30u64 {
        let done = submit(
            &l,
            create(
                if i % 3 == 0 { "globex" } else { "acme" },
                &(i % 4).to_string(),
            ),
        )
        .unwrap();
        let id = done.actions[0].id;
        assert_eq!(p.get(id).unwrap().as_ref(), Some(&done.actions[0]));
        assert_eq!(p.get_by_uid(&format!("al-{id}")).unwrap().unwrap().id, id);
        let page = p.list(&q_tenant(&done.actions[0].tenant, 1)).unwrap();
        assert_eq!(page.actions[0].id, id, "the newest is the one just written");
        let ev = submit(&l, event(id, EventBody::Started)).unwrap();
        assert_eq!(p.get(id).unwrap().unwrap(), ev.actions[0]);
    }
    let page = p.list(&q_tenant("acme", 5)).unwrap();
    assert_eq!(page.total, 20);
    assert_eq!(
        page.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![30, 29, 27, 26, 24]
    );
    let resource = ActionQuery {
        resource: Some(ResourceRef {
            resource_type: "droplet".into(),
            id: "1".into(),
        }),
        ..q_tenant("acme", 50)
    };
    let page = p.list(&resource).unwrap();
    assert!(page.next_cursor.is_none());
    assert_eq!(page.total, page.actions.len() as u64);
    assert!(page
        .actions
        .iter()
        .all(|a| a.resource.id == "1" && a.tenant == "acme"));
    let admin = p
        .list(&ActionQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(admin.total, 30);
    assert_eq!(admin.actions.len(), 30);
    // Limits and bad input are errors, not panics.
    assert!(matches!(
        p.list(&q_tenant("acme", 0)),
        Err(QueryError::BadRequest(_))
    ));
    assert!(matches!(
        p.list(&q_tenant("acme", 1001)),
        Err(QueryError::BadRequest(_))
    ));
    let both = ActionQuery {
        cursor: Some(page.next_cursor.unwrap_or_else(|| "00".into())),
        offset: 3,
        ..q_tenant("acme", 5)
    };
    assert!(p.list(&both).is_err());
    assert!(matches!(
        p.list(&ActionQuery {
            cursor: Some("not-a-cursor".into()),
            ..q_tenant("acme", 5)
        }),
        Err(QueryError::BadCursor(_))
    ));
    assert_eq!(p.get(999).unwrap(), None);
    assert_eq!(p.get_by_uid("nope").unwrap(), None);
    // Generated uids have no key of their own; a chosen one has.
    let tree = p.tree_for_tests();
    assert_eq!(tree.scan_prefix([projection::keys::P_UID]).count(), 0);
    assert_eq!(p.get_by_uid("al-30").unwrap().unwrap().id, 30);
    for absent in ["al-31", "al-030", "al-0"] {
        assert_eq!(p.get_by_uid(absent).unwrap(), None, "{absent}");
    }
    let Command::Create(mut chosen) = create("acme", "9") else {
        unreachable!()
    };
    chosen.uid = Some("job-7".into());
    let id = submit(&l, Command::Create(chosen)).unwrap().actions[0].id;
    // Raw sled again: the accessor writes out what the write-back holds first.
    let tree = p.tree_for_tests();
    assert_eq!(tree.scan_prefix([projection::keys::P_UID]).count(), 1);
    assert_eq!(p.get_by_uid("job-7").unwrap().unwrap().id, id);
    assert_eq!(p.get_by_uid(&format!("al-{id}")).unwrap(), None);
}

#[test]
fn reads_by_id_or_uid_are_scoped_to_the_callers_tenant() {
    // Goal: the core owns tenant isolation for reads by id or uid: a caller scoped to one
    // tenant gets nothing for another tenant's action (by id or uid, from memory or sled),
    // exactly as for one that does not exist; an unscoped caller (admin) sees every one.
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let p = open_projection(&tmp.path().join("p"));
    let l = open_sim_with(&sim, 1 << 20, p.clone()).unwrap();
    let acme = submit(&l, create("acme", "1")).unwrap().actions[0].clone();
    let globex = submit(&l, create("globex", "1")).unwrap().actions[0].clone();
    for a in [&acme, &globex] {
        for r in [ActionRef::Id(a.id), ActionRef::Uid(a.uid.clone())] {
            let mine = Some(a.tenant.as_str());
            let other = Some(if a.tenant == "acme" { "globex" } else { "acme" });
            assert_eq!(p.get_ref_scoped(&r, mine).unwrap().unwrap().id, a.id);
            assert_eq!(p.get_ref_scoped(&r, None).unwrap().unwrap().id, a.id);
            assert_eq!(p.get_ref_scoped(&r, other).unwrap(), None, "{r:?}");
            // From memory: never another tenant's action (None also means "not in memory").
            assert!(p.get_in_memory_scoped(&r, other).is_none(), "{r:?}");
            if let Some(m) = p.get_in_memory_scoped(&r, mine) {
                assert_eq!(m.id, a.id);
            }
        }
    }
    for r in [ActionRef::Id(999), ActionRef::Uid("al-999".into())] {
        assert_eq!(p.get_ref_scoped(&r, Some("acme")).unwrap(), None);
        assert_eq!(p.get_ref_scoped(&r, None).unwrap(), None);
    }
}

#[test]
fn store_semantics_match_memory_store() {
    // Goal: the projection answers the writer's questions (uid, exclusive holder,
    // idempotent answer, max id, applied position) exactly like MemoryStore, on the same log.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = World::new(7, &tmp.path().join("p"));
    for _ in 0..150 {
        w.step();
    }
    w.close();
    let memory = Arc::new(action_ledger::ledger::memory::MemoryStore::new());
    let lm = open_sim_with(&w.sim, 2048, memory.clone()).unwrap();
    lm.close();
    let p = open_projection(&w.dir);
    let lp = open_sim_with(&w.sim, 2048, p.clone()).unwrap();
    assert_eq!(p.applied_position(), memory.applied_position());
    assert_eq!(p.max_action_id().unwrap(), memory.max_action_id().unwrap());
    for a in memory.all() {
        assert_eq!(p.action(a.id).unwrap().as_ref(), Some(&a));
        assert_eq!(p.id_for_uid(&a.uid).unwrap(), Some(a.id));
        assert_eq!(
            p.exclusive_holder(&a.tenant, &a.resource).unwrap(),
            memory.exclusive_holder(&a.tenant, &a.resource).unwrap()
        );
    }
    for t in crate::projection_model::TENANTS {
        for k in 0..4 {
            let key = format!("k{k}");
            assert_eq!(
                p.idempotent_result(t, &key).unwrap(),
                memory.idempotent_result(t, &key).unwrap()
            );
        }
    }
    drop((lm, lp));
}

#[test]
fn history_and_as_of_fold_the_records() {
    // Goal: history lists the records of one action (batches included) and as-of folds them
    // up to a position or a time.
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let p = open_projection(&tmp.path().join("p"));
    let l = open_sim_with(&sim, 600, p.clone()).unwrap();
    submit(&l, create("acme", "1")).unwrap(); // id 1, position 1
    let batch = l
        .submit_blocking(submission(
            None,
            vec![
                create("acme", "2"),
                event(1, EventBody::Started),
                event(2, progress(10.0)),
            ],
        ))
        .unwrap(); // position 2
    let p3 = submit(&l, event(1, progress(50.0))).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let p4 = submit(&l, event(1, EventBody::Completed { message: None })).unwrap();

    let locations = p.history(1).unwrap();
    assert_eq!(
        locations.iter().map(|r| r.position).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(
        locations.iter().map(|r| r.segment).max() > Some(1),
        "segments rotated"
    );
    let records = l.history(&*p, 1).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[1].ops.len(),
        1,
        "only this action's operations of the batch"
    );
    assert!(matches!(
        records[1].ops[0],
        Op::Event {
            action: 1,
            body: EventBody::Started
        }
    ));
    assert_eq!(p.history(2).unwrap().len(), 1);
    assert!(p.history(99).unwrap().is_empty());

    assert_eq!(l.action_as_of(&*p, 2, AsOf::Position(1)).unwrap(), None);
    assert_eq!(
        l.action_as_of(&*p, 1, AsOf::Position(2)).unwrap().as_ref(),
        Some(&batch.actions[1])
    );
    assert_eq!(
        l.action_as_of(&*p, 1, AsOf::Position(3)).unwrap().as_ref(),
        Some(&p3.actions[0])
    );
    assert_eq!(
        l.action_as_of(&*p, 1, AsOf::Time(p4.recorded_at - 1))
            .unwrap()
            .as_ref(),
        Some(&p3.actions[0])
    );
    assert_eq!(
        l.action_as_of(&*p, 1, AsOf::Time(p4.recorded_at)).unwrap(),
        p.get(1).unwrap()
    );
    assert_eq!(l.action_as_of(&*p, 1, AsOf::Time(0)).unwrap(), None);
}

#[test]
fn updated_ranges_find_actions_across_time_buckets() {
    // Goal: updated_since/updated_until answer exactly (every page, and the total) when the
    // actions' last updates spread over hours, so the updated index's ~67 s time buckets
    // and their edges matter. Entries are applied directly with chosen record times.
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let p = open_projection(&tmp.path().join("p"));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let width: Micros = 1 << projection::keys::UPDATED_BUCKET_SHIFT;
    let t0: Micros = 1_700_000_000_000_000 / width * width;
    let tenants = ["acme", "globex"];
    // id → (tenant index, updated_at)
    let mut model: Vec<(usize, Micros)> = Vec::new();
    let mut at = t0;
    let mut batch = Vec::new();
    for position in 1..=1500u64 {
        at += rng.random_range(0..40_000_000);
        let op = if model.is_empty() || rng.random_bool(0.4) {
            let id = model.len() as u64 + 1;
            let tenant = rng.random_range(0..2);
            model.push((tenant, at));
            let create = CreateAction {
                status: InitialStatus::Running,
                ..CreateAction::new(
                    tenants[tenant],
                    "snapshot",
                    "droplet",
                    &(id % 7).to_string(),
                )
            };
            Op::Create(NewAction::assign(&create, id, format!("u-{id}")))
        } else {
            let id = rng.random_range(1..=model.len() as u64);
            model[id as usize - 1].1 = at;
            Op::Event {
                action: id,
                body: EventBody::Heartbeat,
            }
        };
        batch.push(committed(position, at, op));
        if batch.len() == 37 {
            p.apply(&batch).unwrap();
            batch.clear();
        }
    }
    p.apply(&batch).unwrap();
    let end = at;
    assert!(end - t0 > 100 * width, "the updates span many time buckets");

    let pick = |rng: &mut rand::rngs::SmallRng| -> Micros {
        let edge = t0 + rng.random_range(0..(end - t0) / width + 2) * width;
        match rng.random_range(0..4) {
            0 => edge,
            1 => edge + rng.random_range(-1..=1),
            2 => model[rng.random_range(0..model.len())].1 + rng.random_range(-1..=1),
            _ => rng.random_range(t0 - width..end + width),
        }
    };
    for _ in 0..300 {
        let tenant = rng.random_range(0..2);
        let since = rng.random_bool(0.7).then(|| pick(&mut rng));
        let until = rng.random_bool(0.7).then(|| pick(&mut rng));
        let mut expected: Vec<u64> = model
            .iter()
            .enumerate()
            .filter(|(_, (t, u))| {
                *t == tenant && since.is_none_or(|s| *u >= s) && until.is_none_or(|e| *u < e)
            })
            .map(|(i, _)| i as u64 + 1)
            .collect();
        expected.reverse();
        let mut q = ActionQuery {
            updated_since: since,
            updated_until: until,
            ..q_tenant(tenants[tenant], 40)
        };
        let mut got = Vec::new();
        loop {
            let page = p.list(&q).unwrap();
            assert_eq!(page.total, expected.len() as u64, "{since:?}..{until:?}");
            got.extend(page.actions.iter().map(|a| a.id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, expected, "{since:?}..{until:?}");
    }
}

#[test]
fn a_long_history_spills_out_of_the_snapshot_and_reads_back_whole() {
    // Goal: an action touched by more records than its snapshot keeps locations for still
    // lists every record, in order, however the records were batched; the layout of the
    // spilled runs is the same after a rebuild (byte for byte), and verify finds a lost run.
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let dir = tmp.path().join("p");
    let p = open_projection(&dir);
    let l = Arc::new(open_sim_with(&sim, 4096, p.clone()).unwrap());
    let id = submit(&l, create("acme", "1")).unwrap().actions[0].id;
    submit(&l, event(id, EventBody::Started)).unwrap();
    let other = submit(&l, create("acme", "2")).unwrap().actions[0].id;
    // 4 threads × 30 records, so group commit folds several records of the action into
    // one apply, plus a record touching both actions.
    std::thread::scope(|s| {
        for t in 0..4 {
            let l = l.clone();
            s.spawn(move || {
                for i in 0..30 {
                    submit(&l, event(id, progress((t * 30 + i) as f64 / 2.0))).unwrap();
                }
            });
        }
    });
    l.submit_blocking(submission(
        None,
        vec![event(id, progress(99.0)), event(other, EventBody::Started)],
    ))
    .unwrap();
    let expected: Vec<u64> = {
        let mut v = vec![1, 2];
        v.extend(4..=124);
        v
    };
    let positions = |p: &Projection| -> Vec<u64> {
        p.history(id).unwrap().iter().map(|r| r.position).collect()
    };
    assert_eq!(positions(&p), expected);
    assert_eq!(p.history(other).unwrap().len(), 2);
    let records = l.history(&*p, id).unwrap();
    assert_eq!(records.len(), expected.len());
    let tree = p.tree_for_tests();
    let spilled: Vec<_> = tree
        .scan_prefix(projection::keys::history_prefix(id))
        .map(|kv| kv.unwrap())
        .collect();
    assert_eq!(
        spilled.len(),
        3,
        "123 locations = 3 runs of 32 + a tail of 27"
    );
    let snapshot = p.snapshot_value_for_tests(id).unwrap();
    let (_, tail) = projection::keys::split_snapshot(&snapshot).unwrap();
    assert_eq!(tail.len(), 27 * projection::keys::LOCATION_BYTES);
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    // Every snapshot and history key with its value.
    let families = [
        projection::keys::P_SNAPSHOT,
        projection::keys::P_PACK,
        projection::keys::P_HISTORY,
    ];
    let p = rebuilt_with_the_same_keys(&sim, &dir, l, p, &families);
    assert_eq!(positions(&p), expected);

    p.tree_for_tests().remove(&spilled[1].0).unwrap();
    assert_eq!(positions(&p).len(), expected.len() - 32);
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    let text = report.differences.join("\n");
    assert!(text.contains("history index"), "{text}");
}

#[test]
fn the_memos_never_answer_less_than_was_acknowledged() {
    // Goal: with readers racing the applier and memos so small that puts evict, no get or
    // list — from sled or from memory — ever answers a state older than one already
    // acknowledged, or a resource's list without an action whose creation was; and at the
    // end the snapshot memo agrees with sled and with a fresh fold of the log (verify).
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let config = projection::ProjectionConfig {
        snapshot_cache_bytes: 64 * 1024,
        ..projection_config()
    };
    let p = Arc::new(Projection::open(tmp.path().join("p"), config).unwrap());
    let l = Arc::new(open_sim_with(&sim, 1 << 16, p.clone()).unwrap());
    const ACTIONS: u64 = 40;
    let resource = |i: u64| ResourceRef {
        resource_type: "droplet".into(),
        id: (i % 5).to_string(),
    };
    // The highest version acknowledged per action, and the actions per resource.
    let acked: Mutex<HashMap<ActionId, u64>> = Mutex::new(HashMap::new());
    let created: Mutex<HashMap<String, Vec<ActionId>>> = Mutex::new(HashMap::new());
    for i in 0..ACTIONS {
        let id = submit(&l, create("acme", &resource(i).id)).unwrap().actions[0].id;
        submit(&l, event(id, EventBody::Started)).unwrap();
        created
            .lock()
            .unwrap()
            .entry(resource(i).id)
            .or_default()
            .push(id);
    }
    let done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                let (l, acked, created) = (l.clone(), &acked, &created);
                s.spawn(move || {
                    let mut rng = rand::rngs::SmallRng::seed_from_u64(t);
                    for i in 0..600 {
                        if i % 10 == 0 {
                            let r = resource(rng.random_range(0..5));
                            let a = submit(&l, create("acme", &r.id)).unwrap();
                            created
                                .lock()
                                .unwrap()
                                .entry(r.id)
                                .or_default()
                                .push(a.actions[0].id);
                            continue;
                        }
                        let id = rng.random_range(1..=ACTIONS);
                        let a = submit(&l, event(id, progress((i % 100) as f64))).unwrap();
                        let v = a.actions[0].version;
                        let mut m = acked.lock().unwrap();
                        let e = m.entry(id).or_default();
                        *e = (*e).max(v);
                    }
                })
            })
            .collect();
        for t in 0..2u64 {
            let (p, acked, created, done, reads) = (p.clone(), &acked, &created, &done, &reads);
            s.spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(100 + t);
                while !done.load(Ordering::Acquire) {
                    let r = resource(rng.random_range(0..5));
                    let listed_before = created.lock().unwrap()[&r.id].clone();
                    let q = ActionQuery {
                        resource: Some(r.clone()),
                        ..q_tenant("acme", 1000)
                    };
                    let page = match rng.random_bool(0.5) {
                        true => p.list_in_memory(&q).unwrap(),
                        false => Some(p.list(&q).unwrap()),
                    };
                    if let Some(page) = page {
                        let ids: Vec<ActionId> = page.actions.iter().map(|a| a.id).collect();
                        for id in &listed_before {
                            assert!(ids.contains(id), "{r:?}: {id} missing from {ids:?}");
                        }
                        assert_eq!(page.total, ids.len() as u64);
                    }
                    let before = acked.lock().unwrap().clone();
                    let seen: Vec<(ActionId, u64)> = if rng.random_bool(0.5) {
                        let id = rng.random_range(1..=ACTIONS);
                        let a = p.get(id).unwrap().unwrap();
                        vec![(a.id, a.version)]
                    } else {
                        p.list(&q_tenant("acme", 50))
                            .unwrap()
                            .actions
                            .iter()
                            .map(|a| (a.id, a.version))
                            .collect()
                    };
                    for (id, version) in seen {
                        let floor = before.get(&id).copied().unwrap_or(0);
                        assert!(
                            version >= floor,
                            "action {id}: read version {version} after {floor} was acknowledged"
                        );
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    assert!(reads.load(Ordering::Relaxed) > 10, "the readers ran");
    let acked = acked.into_inner().unwrap();
    for id in 1..=ACTIONS {
        let a = p.get(id).unwrap().unwrap();
        assert_eq!(
            a.version,
            acked.get(&id).copied().unwrap_or(2),
            "action {id}"
        );
    }
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
}

#[test]
fn foreign_format_or_garbage_is_reset_and_rebuilt() {
    // Goal: a projection of another format version, or one sled cannot open, is deleted at
    // open and the ledger rebuilds it from the log with the same answers.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = World::new(11, &tmp.path().join("p"));
    for _ in 0..80 {
        w.step();
    }
    let queries: Vec<ActionQuery> = (0..20).map(|_| w.rand_query()).collect();
    let before = w.answers(&queries);
    // Another format version.
    w.projection()
        .tree_for_tests()
        .insert(projection::keys::META_FORMAT, &99u32.to_be_bytes())
        .unwrap();
    w.close();
    let p = Projection::open(&w.dir, projection_config()).unwrap();
    assert!(p
        .open_report()
        .reset
        .as_deref()
        .unwrap_or("")
        .contains("format version"));
    assert_eq!(p.applied_position(), 0);
    drop(p);
    w.reopen();
    assert_eq!(w.answers(&queries), before);
    // Garbage where sled keeps its files.
    w.close();
    for entry in std::fs::read_dir(&w.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"definitely not sled").unwrap();
        }
    }
    let p = Projection::open(&w.dir, projection_config()).unwrap();
    assert!(p.open_report().reset.is_some());
    drop(p);
    w.reopen();
    assert_eq!(w.answers(&queries), before);
}

#[test]
fn a_locked_projection_is_never_deleted() {
    // Goal: opening or rebuilding a projection another handle has open fails cleanly and
    // leaves it intact.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = World::new(12, &tmp.path().join("p"));
    for _ in 0..20 {
        w.step();
    }
    let err = Projection::open(&w.dir, projection_config())
        .err()
        .expect("locked");
    assert!(
        matches!(err, projection::ProjectionError::Locked { .. }),
        "{err}"
    );
    let r = projection::rebuild(
        &w.sim,
        &log_dir(),
        &w.dir,
        &projection_config(),
        &mut |_| {},
    );
    assert!(matches!(
        r,
        Err(projection::rebuild::RebuildError::Projection(
            projection::ProjectionError::Locked { .. }
        ))
    ));
    let q = w.rand_query();
    w.check_query(&q, false);
}

#[test]
fn rebuild_gives_identical_answers() {
    // Goal: answers before and after deleting the projection directory are identical, both
    // when the ledger catches up from position 0 and after the library rebuild.
    with_seed(21, |seed| {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = World::new(seed, &tmp.path().join("p"));
        for _ in 0..250 {
            w.step();
        }
        let mut queries: Vec<ActionQuery> = (0..40).map(|_| w.rand_query()).collect();
        // Second pages too: cursors must survive a rebuild.
        for q in queries.clone() {
            if let Ok(Page {
                next_cursor: Some(c),
                ..
            }) = w.projection().list(&q)
            {
                queries.push(ActionQuery {
                    cursor: Some(c),
                    ..q
                });
            }
        }
        let before = w.answers(&queries);
        let ids: Vec<_> = (1..=w.model.len() as u64).collect();
        let snapshots: Vec<_> = ids
            .iter()
            .map(|id| w.projection().get(*id).unwrap())
            .collect();

        w.close();
        std::fs::remove_dir_all(&w.dir).unwrap();
        w.reopen();
        assert_eq!(
            w.answers(&queries),
            before,
            "seed {seed}: caught up from position 0"
        );

        w.close();
        let mut reports = Vec::new();
        let (p, summary) =
            projection::rebuild(&w.sim, &log_dir(), &w.dir, &projection_config(), &mut |r| {
                reports.push(*r)
            })
            .unwrap();
        assert_eq!(summary.actions, w.model.len() as u64);
        assert_eq!(p.applied_position(), summary.last_position);
        let last = reports.last().copied().expect("progress reported");
        assert_eq!(last.bytes_done, last.bytes_total);
        assert_eq!(last.records_done, summary.records);
        drop(p);
        w.reopen();
        assert_eq!(w.answers(&queries), before, "seed {seed}: library rebuild");
        let after: Vec<_> = ids
            .iter()
            .map(|id| w.projection().get(*id).unwrap())
            .collect();
        assert_eq!(after, snapshots);
        let report = projection::verify_projection(&w.sim, &log_dir(), w.projection()).unwrap();
        assert!(report.is_consistent(), "{:?}", report.differences);
    });
}

#[test]
fn verify_projection_finds_damage() {
    // Goal: a tampered snapshot (and the applier's memo that no longer matches it), a lost
    // index bucket and a wrong counter are all reported.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = World::new(31, &tmp.path().join("p"));
    for _ in 0..60 {
        w.step();
    }
    let p = w.projection();
    let tree = p.tree_for_tests();
    let mut a = p.get(1).unwrap().unwrap();
    a.progress = 42.5;
    a.message = Some("tampered".into());
    let stored = p.snapshot_value_for_tests(1).unwrap();
    let (_, tail) = projection::keys::split_snapshot(&stored).unwrap();
    p.put_snapshot_value_for_tests(
        1,
        &projection::keys::snapshot_value(
            &action_ledger::event::codec::encode_unbounded(&a).unwrap(),
            tail,
        ),
    );
    let bucket = tree
        .scan_prefix([projection::keys::P_IX_STATUS])
        .next()
        .unwrap()
        .unwrap()
        .0;
    tree.remove(bucket).unwrap();
    let counter =
        projection::keys::counter_key(projection::keys::Scope::All, projection::keys::Dim::Total);
    tree.insert(&counter, &1_000_000u64.to_be_bytes()).unwrap();
    let report = projection::verify_projection(&w.sim, &log_dir(), p).unwrap();
    assert!(!report.is_consistent());
    let text = report.differences.join("\n");
    assert!(text.contains("action 1: stored snapshot differs"), "{text}");
    // The applier's memo of what it wrote still holds action 1's real value: it no longer
    // matches sled, and the next record on action 1 would start from it, so it is reported.
    assert!(
        text.contains("action 1: the applier's memo of written values differs from sled"),
        "{text}"
    );
    assert!(text.contains("index bucket"), "{text}");
    assert!(text.contains("counter"), "{text}");
}

#[test]
fn a_lagging_projection_catches_up_to_the_same_answers() {
    // Goal: a projection that lost its most recent batches (an older copy of its directory,
    // as after sled lost unflushed writes in a crash) is caught up from the log at open and
    // answers exactly like one that never stopped.
    let tmp = tempfile::tempdir().unwrap();
    let mut w = World::new(41, &tmp.path().join("p"));
    let old = tmp.path().join("old");
    for _ in 0..60 {
        w.step();
    }
    w.close();
    copy_dir(&w.dir, &old);
    w.reopen();
    for _ in 0..120 {
        w.step();
    }
    let queries: Vec<ActionQuery> = (0..30).map(|_| w.rand_query()).collect();
    let clean = w.answers(&queries);
    let applied = w.projection().applied_position();
    w.close();
    std::fs::remove_dir_all(&w.dir).unwrap();
    copy_dir(&old, &w.dir);
    let lagging = open_projection(&w.dir);
    assert!(lagging.applied_position() < applied, "the copy is behind");
    drop(lagging);
    w.reopen();
    assert_eq!(w.projection().applied_position(), applied);
    assert_eq!(w.answers(&queries), clean);
    let report = projection::verify_projection(&w.sim, &log_dir(), w.projection()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
}

/// A store that dies (refuses every apply) after `budget` entries, like a process killed
/// between the log's fdatasync and the projection apply.
struct DiesAfter {
    inner: Arc<Projection>,
    budget: AtomicUsize,
}

impl StateStore for DiesAfter {
    fn action(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        self.inner.action(id)
    }
    fn id_for_uid(&self, uid: &str) -> Result<Option<ActionId>, StoreError> {
        self.inner.id_for_uid(uid)
    }
    fn exclusive_holder(&self, t: &str, r: &ResourceRef) -> Result<Option<ActionId>, StoreError> {
        self.inner.exclusive_holder(t, r)
    }
    fn idempotent_result(
        &self,
        t: &str,
        k: &str,
    ) -> Result<Option<action_ledger::ledger::IdempotentResult>, StoreError> {
        self.inner.idempotent_result(t, k)
    }
    fn max_action_id(&self) -> Result<ActionId, StoreError> {
        self.inner.max_action_id()
    }
    fn applied_position(&self) -> u64 {
        self.inner.applied_position()
    }
    fn apply(&self, entries: &[CommittedEntry]) -> Result<(), StoreError> {
        let left = self.budget.load(Ordering::SeqCst);
        let n = entries.len().min(left);
        self.budget.store(left - n, Ordering::SeqCst);
        self.inner.apply(&entries[..n])?;
        if n < entries.len() {
            return Err(StoreError::Other("killed between append and apply".into()));
        }
        Ok(())
    }
}

#[test]
fn crash_between_log_append_and_projection_apply() {
    // Goal: records made durable in the log but never applied (the process died between the
    // two) are applied at the next open; the answers equal a clean run's.
    let tmp = tempfile::tempdir().unwrap();
    let clean_dir = tmp.path().join("clean");
    let crash_dir = tmp.path().join("crash");
    let sim = SimStorage::new();
    // Fill the log through a projection that dies after 40 entries; the writer refuses
    // writes once the apply fails, so keep submitting until it does.
    let p = open_projection(&crash_dir);
    let dying = Arc::new(DiesAfter {
        inner: p.clone(),
        budget: AtomicUsize::new(40),
    });
    let l = open_sim_with(&sim, 2048, dying).unwrap();
    let mut acked = 0u64;
    let mut refused = false;
    for i in 0..80u64 {
        let mut c = CreateAction::new(
            ["acme", "globex"][i as usize % 2],
            "resize",
            "droplet",
            &(i % 7).to_string(),
        );
        c.exclusive = i % 5 == 0;
        let r = l.submit_blocking(submission(None, vec![Command::Create(c)]));
        match r {
            Ok(done) => {
                acked = done.position;
                if i % 3 == 0 {
                    let _ = l.submit_blocking(submission(
                        None,
                        vec![event(done.actions[0].id, EventBody::Started)],
                    ));
                }
            }
            Err(LedgerError::Rejected(_)) => {}
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the dying store stopped the writer");
    let durable = l.committed_position();
    assert!(
        durable > p.applied_position(),
        "durable records were not applied"
    );
    drop(l);
    drop(p);

    // Restart: the same projection directory catches up from the log.
    let p = open_projection(&crash_dir);
    let l = open_sim_with(&sim, 2048, p.clone()).unwrap();
    assert_eq!(p.applied_position(), durable);
    assert!(acked <= durable);
    l.close();
    // A clean projection of the same log (never interrupted).
    let clean = open_projection(&clean_dir);
    let lc = open_sim_with(&sim, 2048, clean.clone()).unwrap();
    let mut queries = vec![
        ActionQuery {
            limit: 7,
            ..Default::default()
        },
        q_tenant("acme", 3),
        q_tenant("globex", 50),
        ActionQuery {
            resource: Some(ResourceRef {
                resource_type: "droplet".into(),
                id: "3".into(),
            }),
            ..q_tenant("acme", 2)
        },
        ActionQuery {
            statuses: vec![Status::Running],
            ..q_tenant("acme", 4)
        },
    ];
    for q in queries.clone() {
        if let Ok(Page {
            next_cursor: Some(c),
            ..
        }) = clean.list(&q)
        {
            queries.push(ActionQuery {
                cursor: Some(c),
                ..q
            });
        }
    }
    for q in &queries {
        assert_eq!(p.list(q), clean.list(q), "{q:?}");
    }
    for id in 1..=p.max_action_id().unwrap() {
        assert_eq!(p.get(id).unwrap(), clean.get(id).unwrap());
    }
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    drop((l, lc));
}

#[test]
fn power_loss_then_restart_matches_a_fresh_rebuild() {
    // Goal: after simulated power losses at random disk operations (the log keeps only what
    // was synced; the projection keeps whatever it had), restart answers like a projection
    // rebuilt from scratch.
    for seed in [51u64, 52, 53] {
        with_seed(seed, |seed| {
            let tmp = tempfile::tempdir().unwrap();
            let mut w = World::new(seed, &tmp.path().join("p"));
            for life in 0..3 {
                let crash_in = 20 + (seed * 7 + life * 13) % 60;
                w.sim.schedule_power_loss(crash_in, seed + life);
                for _ in 0..40 {
                    // Errors are expected once the power is gone; only acceptance matters.
                    let tenant = crate::projection_model::TENANTS[(life as usize) % 3];
                    let r = w
                        .ledger()
                        .submit_blocking(submission(None, vec![create(tenant, "1")]));
                    if r.is_err() {
                        break;
                    }
                }
                w.close();
                if !w.sim.crashed() {
                    w.sim
                        .power_loss(|_, _| action_ledger::log::storage::Tear::DropAll);
                }
                w.sim.restart();
                w.reopen();
            }
            let queries: Vec<ActionQuery> = (0..10).map(|_| w.rand_query()).collect();
            let restarted = w.answers(&queries);
            w.close();
            let (fresh, _) = projection::rebuild(
                &w.sim,
                &log_dir(),
                &tmp.path().join("fresh"),
                &projection_config(),
                &mut |_| {},
            )
            .unwrap();
            let rebuilt: Vec<_> = queries.iter().map(|q| fresh.list(q)).collect();
            assert_eq!(restarted, rebuilt, "seed {seed}");
        });
    }
}

#[test]
fn a_rebuild_over_several_windows_reports_progress_and_folds_everything() {
    // Goal: a log longer than a few rebuild windows (read on the scanning thread, folded on
    // the caller's) is folded whole — an action created in one window and started in the
    // next is running, one completed later still is completed and in its resource list's
    // chunk (verify checks), whether the lists' unfilled chunks stay in memory between
    // windows or are flushed — and every progress report carries the log's size and moves
    // forward.
    use action_ledger::log::writer::NewRecord;
    use action_ledger::log::{LogConfig, LogWriter};
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let actions = projection::rebuild::REBUILD_WINDOW_RECORDS as u64 + 3_000;
    let (mut writer, _) = LogWriter::open(
        Arc::new(sim.clone()),
        LogConfig::new(log_dir()),
        &mut |_| Ok(()),
    )
    .unwrap();
    let entry = |position: u64, ops: Vec<Op>| {
        codec::encode_entry(&Entry {
            recorded_at: 1_700_000_000_000_000 + position as i64,
            principal: "test".into(),
            idempotency: None,
            ops,
        })
        .unwrap()
    };
    let mut payloads = Vec::new();
    // Every action is created, then started `actions` records later (in a later window);
    // the first half then completes, in later windows still, so the resource lists' chunks
    // gain finished members long after they were written.
    let records = 2 * actions + actions / 2;
    for record in 1..=records {
        let ops = if record <= actions {
            let id = record;
            let mut c = CreateAction::new("acme", "snapshot", "droplet", &(id % 97).to_string());
            c.uid = None;
            vec![Op::Create(NewAction::assign(&c, id, format!("al-{id}")))]
        } else if record <= 2 * actions {
            vec![Op::Event {
                action: record - actions,
                body: EventBody::Started,
            }]
        } else {
            vec![Op::Event {
                action: record - 2 * actions,
                body: EventBody::Completed { message: None },
            }]
        };
        payloads.push(entry(record, ops));
        if payloads.len() == 4096 {
            let batch: Vec<NewRecord<'_>> =
                payloads.iter().map(|p| codec::entry_record(p)).collect();
            writer.append(&batch).unwrap();
            payloads.clear();
        }
    }
    let batch: Vec<NewRecord<'_>> = payloads.iter().map(|p| codec::entry_record(p)).collect();
    writer.append(&batch).unwrap();
    drop(writer);

    let mut reports = Vec::new();
    let (p, summary) = projection::rebuild(
        &sim,
        &log_dir(),
        &tmp.path().join("p"),
        &projection_config(),
        &mut |r| reports.push(*r),
    )
    .unwrap();
    assert_eq!(summary.records, records);
    assert_eq!(summary.actions, actions);
    assert!(
        reports.len() >= 3,
        "one report per window and a last one: {reports:?}"
    );
    let total = reports[0].bytes_total;
    assert!(total > 0);
    for pair in reports.windows(2) {
        assert_eq!(pair[1].bytes_total, total, "{reports:?}");
        assert!(pair[0].bytes_done <= pair[1].bytes_done, "{reports:?}");
        assert!(pair[0].records_done <= pair[1].records_done, "{reports:?}");
        assert!(pair[1].bytes_done <= total, "{reports:?}");
    }
    let last = reports.last().unwrap();
    assert_eq!((last.bytes_done, last.records_done), (total, records));
    for (id, status) in [
        (1, Status::Completed),
        (actions / 2, Status::Completed),
        (actions / 2 + 1, Status::Running),
        (
            projection::rebuild::REBUILD_WINDOW_RECORDS as u64,
            Status::Running,
        ),
        (actions, Status::Running),
    ] {
        let a = p.get(id).unwrap().expect("every action is there");
        assert_eq!(a.status, status, "action {id}");
    }
    // A resource's list pages newest first through chunks written in many windows.
    let q = ActionQuery {
        tenant: Some("acme".into()),
        resource: Some(ResourceRef {
            resource_type: "droplet".into(),
            id: "5".into(),
        }),
        limit: 1000,
        ..Default::default()
    };
    let listed: Vec<u64> = p.list(&q).unwrap().actions.iter().map(|a| a.id).collect();
    let expected: Vec<u64> = (1..=actions).rev().filter(|id| id % 97 == 5).collect();
    assert_eq!(listed, expected);
    // The lists' unfilled chunks held in memory to the end (the default bound) or flushed
    // to sled every window (the tests' small one): the same bytes either way.
    let config = projection::ProjectionConfig {
        rebuild_held_bytes_max: projection::rebuild::REBUILD_HELD_CHUNK_BYTES_MAX,
        ..projection_config()
    };
    let (held, _) = projection::rebuild(
        &sim,
        &log_dir(),
        &tmp.path().join("held"),
        &config,
        &mut |_| {},
    )
    .unwrap();
    let families = [
        projection::keys::P_SNAPSHOT,
        projection::keys::P_PACK,
        projection::keys::P_IX_RESOURCE,
    ];
    assert_eq!(keys_of(&held, &families), keys_of(&p, &families));
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
}

#[test]
fn finished_actions_live_in_packs_and_resource_lists_page_across_chunks() {
    // Goal: a finished action leaves its own snapshot key for its pack in the write that
    // finishes it, an unfinished one keeps its key; a resource with more actions than a
    // list chunk holds pages newest first across chunks (tenant and admin alike), every
    // chunk but the last full, each chunk carrying its finished members' snapshots; verify
    // agrees (and notices a chunk that lost them), and a rebuild lays out the same keys.
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let dir = tmp.path().join("p");
    let p = open_projection(&dir);
    let l = open_sim_with(&sim, 1 << 20, p.clone()).unwrap();
    let chunk = projection::keys::RESOURCE_CHUNK_IDS;
    let n = 4 * chunk + 11;
    let mut on_resource = Vec::new();
    let mut unfinished = Vec::new();
    for i in 0..n {
        // Another resource's action now and then, so the list's ids are not contiguous.
        if i % 7 == 3 {
            submit(&l, create("acme", "other")).unwrap();
        }
        let id = submit(&l, create("acme", "busy")).unwrap().actions[0].id;
        on_resource.push(id);
        submit(&l, event(id, EventBody::Started)).unwrap();
        if i % 10 == 0 {
            unfinished.push(id);
            continue;
        }
        let done = match i % 3 {
            0 => EventBody::Completed { message: None },
            1 => EventBody::Cancelled { message: None },
            _ => EventBody::Completed {
                message: Some("done".into()),
            },
        };
        submit(&l, event(id, done)).unwrap();
    }
    let tree = p.tree_for_tests();
    for &id in &on_resource {
        let own = tree
            .contains_key(projection::keys::snapshot_key(id))
            .unwrap();
        assert_eq!(own, unfinished.contains(&id), "action {id}: own key {own}");
        assert!(p.snapshot_value_for_tests(id).is_some(), "action {id}");
        let a = p.get(id).unwrap().unwrap();
        assert_eq!(a.status.is_terminal(), !unfinished.contains(&id));
    }
    let packs = tree.scan_prefix([projection::keys::P_PACK]).count();
    assert!(packs > 0 && packs <= (n * 8 / 7) / projection::keys::PACK_IDS as usize + 2);

    let resource = ResourceRef {
        resource_type: "droplet".into(),
        id: "busy".into(),
    };
    let prefix = projection::keys::ix_resource("acme", &resource);
    let chunks: Vec<usize> = tree
        .scan_prefix(&prefix)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let first = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            projection::keys::chunk_ids(first, &v).unwrap().len()
        })
        .collect();
    assert_eq!(chunks, vec![chunk, chunk, chunk, chunk, 11]);

    let newest_first: Vec<u64> = on_resource.iter().rev().copied().collect();
    let page_all = |p: &Projection, tenant: Option<&str>| -> Vec<u64> {
        let mut q = ActionQuery {
            tenant: tenant.map(str::to_string),
            resource: Some(resource.clone()),
            limit: 50,
            ..Default::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = p.list(&q).unwrap();
            assert_eq!(page.total, n as u64);
            ids.extend(page.actions.iter().map(|a| a.id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return ids,
            }
        }
    };
    assert_eq!(page_all(&p, Some("acme")), newest_first);
    assert_eq!(page_all(&p, None), newest_first);
    // Narrowed by status and paged: the same list, filtered.
    let q = ActionQuery {
        tenant: Some("acme".into()),
        resource: Some(resource.clone()),
        statuses: vec![Status::Running],
        limit: 1000,
        ..Default::default()
    };
    let running: Vec<u64> = p.list(&q).unwrap().actions.iter().map(|a| a.id).collect();
    assert_eq!(
        running,
        unfinished.iter().rev().copied().collect::<Vec<_>>()
    );
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);

    let families = [
        projection::keys::P_SNAPSHOT,
        projection::keys::P_PACK,
        projection::keys::P_IX_RESOURCE,
    ];
    let p = Arc::new(rebuilt_with_the_same_keys(&sim, &dir, l, p, &families));
    assert_eq!(page_all(&p, Some("acme")), newest_first);

    // A chunk whose finished members' snapshots are gone is damage verify names.
    let tree = p.tree_for_tests();
    let (k, v) = tree.scan_prefix(&prefix).next().unwrap().unwrap();
    let first = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
    let ids = projection::keys::chunk_ids(first, &v).unwrap();
    let bare = projection::keys::chunk_value(&ids, b"");
    assert!(bare.len() < v.len(), "the first chunk carries snapshots");
    tree.insert(&k, bare).unwrap();
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.contains("is not in its pack although it is finished")),
        "{:?}",
        report.differences
    );
}

#[test]
fn old_packs_are_sealed_into_the_value_file_and_read_back_alike() {
    // Goal: with the tests' seal distance (24 ids, one pack at a time), packs of older ids
    // leave sled for the value file (sled keeps a pointer) and every read answers as
    // before; a finish landing in a sealed pack unseals it; verify and a rebuild agree. A
    // flipped byte of the file is damage verify names with the file and offset, and a file
    // shorter than the projection recorded makes the next open rebuild.
    use projection::keys::P_PACK;
    use projection::values;
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let dir = tmp.path().join("p");
    let p = open_projection(&dir);
    let l = open_sim_with(&sim, 1 << 20, p.clone()).unwrap();
    let (mut all, mut late) = (Vec::new(), Vec::new());
    for i in 0..300u64 {
        let id = submit(&l, create("acme", &format!("r{}", i % 7)))
            .unwrap()
            .actions[0]
            .id;
        all.push(id);
        submit(&l, event(id, EventBody::Started)).unwrap();
        // In the first half only, so the second half's packs stay sealed.
        match i % 9 {
            0 if i < 150 => late.push(id),
            _ => {
                submit(&l, event(id, EventBody::Completed { message: None })).unwrap();
            }
        }
    }
    let packs = |p: &Projection| -> (usize, usize) {
        let tree = p.tree_for_tests();
        let values: Vec<sled::IVec> = tree.scan_prefix([P_PACK]).map(|kv| kv.unwrap().1).collect();
        let sealed = values.iter().filter(|v| values::is_pointer(v)).count();
        (sealed, values.len())
    };
    let (sealed, total) = packs(&p);
    // All but the packs within 24 ids of the newest action (2–3 of 19).
    assert!(sealed + 3 >= total && sealed > 10, "{sealed} of {total}");
    let file = dir.join(values::VALUES_FILE);
    assert!(std::fs::metadata(&file).unwrap().len() > 16 * sealed as u64);
    let answers = |p: &Projection| -> Vec<(u64, Status)> {
        all.iter()
            .map(|&id| (id, p.get(id).unwrap().unwrap().status))
            .collect()
    };
    let before = answers(&p);
    for (id, status) in &before {
        assert_eq!(status.is_terminal(), !late.contains(id), "action {id}");
    }
    let listed = |p: &Projection| -> Vec<u64> {
        let page = p.list(&q_tenant("acme", 1000)).unwrap();
        page.actions.iter().map(|a| a.id).collect()
    };
    assert_eq!(listed(&p), all.iter().rev().copied().collect::<Vec<_>>());

    // The late ones finish now, into sealed packs: those leave the file.
    for &id in &late {
        submit(&l, event(id, EventBody::Cancelled { message: None })).unwrap();
    }
    let (resealed, total_after) = packs(&p);
    assert_eq!(total_after, total);
    assert!(
        resealed > 0 && resealed + 8 <= sealed,
        "{resealed} of {sealed} left sealed"
    );
    let after = answers(&p);
    assert!(after.iter().all(|(_, s)| s.is_terminal()));
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);

    let families = [
        projection::keys::P_SNAPSHOT,
        P_PACK,
        projection::keys::P_IX_RESOURCE,
    ];
    let p = rebuilt_with_the_same_keys(&sim, &dir, l, p, &families);
    assert_eq!(answers(&p), after);
    assert!(
        packs(&p).0 > resealed,
        "a rebuild seals the finished packs again"
    );
    drop(p);

    // A flipped byte inside the first record's value.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[16 + 16 + 3] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let p = Projection::open(&dir, projection_config()).unwrap();
    assert!(p.open_report().reset.is_none());
    let report = projection::verify_projection(&sim, &log_dir(), &p).unwrap();
    let text = report.differences.join("\n");
    assert!(
        text.contains(&file.display().to_string()) && text.contains("at offset 16"),
        "{text}"
    );
    drop(p);

    // Bytes the projection points at are gone: rebuilt at open, like another format.
    std::fs::write(&file, &bytes[..40]).unwrap();
    let p = Projection::open(&dir, projection_config()).unwrap();
    let reset = p.open_report().reset.clone().unwrap_or_default();
    assert!(reset.contains("points into it"), "{reset}");
    assert_eq!(p.applied_position(), 0);
}
