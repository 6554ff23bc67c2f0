//! Model-based test of the sled projection: random command sequences (several tenants and
//! resources, racing exclusive creates, idempotent repeats, batches, events) go to a ledger
//! backed by a [`Projection`] and to a naive model written here — a `Vec` of actions with
//! its own (simplified) lifecycle rules, queried by brute force. Every acceptance decision
//! and every query answer must match, including keyset pages with creates between pages and
//! offset pages.
//!
//! `ACTION_LEDGER_MODEL_SEEDS=N` runs N seeds (default 6); `ACTION_LEDGER_MODEL_SEED=S` runs
//! one. A failure names its seed.

use crate::support::*;
use action_ledger::event::fold::Rejection;
use action_ledger::event::*;
use action_ledger::ledger::{Ledger, LedgerError};
use action_ledger::log::SimStorage;
use action_ledger::projection::{ActionQuery, Page, Projection, QueryError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const TYPES: [&str; 3] = ["snapshot", "reboot", "resize"];
const USERS: [Option<&str>; 3] = [None, Some("alice"), Some("bob")];
const RESOURCE_TYPES: [&str; 2] = ["droplet", "server"];
const RESOURCE_IDS: u32 = 4;
const KINDS: [Kind; 3] = [Kind::Task, Kind::StateMachine, Kind::Other];

/// The model's view of one action: only what queries filter and order on.
#[derive(Clone, Debug)]
pub struct ModelAction {
    pub id: ActionId,
    pub tenant: String,
    pub user: Option<String>,
    pub action_type: String,
    pub kind: Kind,
    pub resource: ResourceRef,
    pub related: Vec<ResourceRef>,
    pub exclusive: bool,
    pub status: Status,
    pub version: u64,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// What a run exercised, so the test can prove it was not vacuous.
#[derive(Default, Debug, Clone, Copy)]
pub struct Exercised {
    pub busy_refusals: u64,
    pub races_won: u64,
    pub replays: u64,
    pub key_reused: u64,
    pub refused_events: u64,
    pub nonempty_answers: u64,
    pub multi_page_answers: u64,
    pub inserts_between_pages: u64,
    /// Pages the projection could also answer from memory alone (compared with `list`).
    pub in_memory_answers: u64,
}

/// The first answer to an idempotent create: digest, position, (id, version) of each action.
type FirstAnswer = ([u8; 32], u64, Vec<(ActionId, u64)>);

/// A ledger + projection under test, and the model they must agree with.
pub struct World {
    pub seen: Exercised,
    pub seed: u64,
    pub rng: SmallRng,
    pub sim: SimStorage,
    pub dir: PathBuf,
    pub ledger: Option<Ledger>,
    pub projection: Option<Arc<Projection>>,
    pub model: Vec<ModelAction>,
    /// (tenant, key) → (digest, position, ids and versions of the first answer).
    idempotent: HashMap<(String, String), FirstAnswer>,
    uids: u64,
}

impl World {
    pub fn new(seed: u64, dir: &Path) -> World {
        let sim = SimStorage::new();
        let mut w = World {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            sim,
            dir: dir.to_path_buf(),
            ledger: None,
            projection: None,
            model: Vec::new(),
            idempotent: HashMap::new(),
            uids: 0,
            seen: Exercised::default(),
        };
        w.reopen();
        w
    }

    pub fn ledger(&self) -> &Ledger {
        self.ledger.as_ref().expect("ledger open")
    }

    pub fn projection(&self) -> &Projection {
        self.projection.as_ref().expect("projection open")
    }

    /// Closes everything (sled's lock is released once the last handle drops).
    pub fn close(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.close();
        }
        self.projection = None;
    }

    /// Opens the projection in `dir` and a ledger on the simulated log over it (catching
    /// the projection up).
    pub fn reopen(&mut self) {
        self.close();
        let p = open_projection(&self.dir);
        let l = open_sim_with(&self.sim, 2048, p.clone())
            .unwrap_or_else(|e| panic!("seed {}: reopen: {e}", self.seed));
        self.projection = Some(p);
        self.ledger = Some(l);
    }

    fn holder(&self, tenant: &str, resource: &ResourceRef) -> Option<ActionId> {
        self.model
            .iter()
            .find(|a| {
                a.exclusive
                    && !a.status.is_terminal()
                    && a.tenant == tenant
                    && &a.resource == resource
            })
            .map(|a| a.id)
    }

    fn rand_resource(&mut self) -> ResourceRef {
        ResourceRef {
            resource_type: RESOURCE_TYPES[self.rng.random_range(0..RESOURCE_TYPES.len())].into(),
            id: self.rng.random_range(0..RESOURCE_IDS).to_string(),
        }
    }

    fn rand_create(&mut self, tenant: &str) -> CreateAction {
        let resource = self.rand_resource();
        let mut c = CreateAction::new(
            tenant,
            TYPES[self.rng.random_range(0..TYPES.len())],
            &resource.resource_type,
            &resource.id,
        );
        c.user = USERS[self.rng.random_range(0..USERS.len())].map(str::to_string);
        c.kind = KINDS[self.rng.random_range(0..KINDS.len())];
        for _ in 0..self.rng.random_range(0..3) {
            let r = self.rand_resource();
            c.related.push(r);
        }
        if self.rng.random_bool(0.3) {
            c.status = InitialStatus::Running;
        }
        c
    }

    fn push_created(&mut self, c: &CreateAction, a: &Action) {
        let id = self.model.len() as u64 + 1;
        assert_eq!(a.id, id, "seed {}: ids are dense and in order", self.seed);
        let status = match c.status {
            InitialStatus::Queued => Status::Queued,
            InitialStatus::Running => Status::Running,
        };
        assert_eq!((a.status, a.version), (status, 1), "seed {}", self.seed);
        self.model.push(ModelAction {
            id,
            tenant: c.tenant.clone(),
            user: c.user.clone(),
            action_type: c.action_type.clone(),
            kind: c.kind,
            resource: c.resource.clone(),
            related: c.related.clone(),
            exclusive: c.exclusive,
            status,
            version: 1,
            created_at: a.created_at,
            updated_at: a.created_at,
        });
    }

    /// A create as the admin or as its own tenant; exclusive creates are checked against
    /// the model's idea of the holder.
    pub fn create(&mut self, c: CreateAction) {
        let scope = self.rng.random_bool(0.5).then(|| c.tenant.clone());
        let busy = if c.exclusive {
            self.holder(&c.tenant, &c.resource)
        } else {
            None
        };
        let r = self.ledger().submit_blocking(submission(
            scope.as_deref(),
            vec![Command::Create(c.clone())],
        ));
        match (busy, r) {
            (None, Ok(done)) => self.push_created(&c, &done.actions[0]),
            (Some(h), Err(LedgerError::Rejected(Rejection::ResourceBusy { blocking, .. }))) => {
                assert_eq!(blocking, h, "seed {}: busy names the holder", self.seed);
                self.seen.busy_refusals += 1;
            }
            (busy, other) => panic!(
                "seed {}: create (holder {busy:?}) gave {other:?}",
                self.seed
            ),
        }
    }

    /// The model's lifecycle: the status after `body`, or `None` when it is refused.
    fn next_status(status: Status, body: &EventBody) -> Option<Status> {
        if status.is_terminal() {
            return None;
        }
        match body {
            EventBody::Started => (status == Status::Queued).then_some(Status::Running),
            EventBody::Progress(_) => Some(Status::Running),
            EventBody::Heartbeat | EventBody::CancelRequested => Some(status),
            EventBody::Completed { .. } => (status == Status::Running).then_some(Status::Completed),
            EventBody::Failed { .. } => Some(Status::Failed),
            EventBody::Cancelled { .. } => Some(Status::Cancelled),
            _ => unreachable!("not generated"),
        }
    }

    fn rand_body(&mut self) -> EventBody {
        match self.rng.random_range(0..8) {
            0 | 1 => EventBody::Started,
            2 => progress(self.rng.random_range(0..=100) as f64),
            3 => EventBody::Heartbeat,
            4 => EventBody::CancelRequested,
            5 => EventBody::Completed { message: None },
            6 => EventBody::Failed {
                error: ErrorInfo {
                    code: "boom".into(),
                    message: "it broke".into(),
                },
            },
            _ => EventBody::Cancelled { message: None },
        }
    }

    pub fn event(&mut self) {
        if self.model.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.model.len());
        let body = self.rand_body();
        let scope = match self.rng.random_range(0..3) {
            0 => None,
            1 => Some(self.model[i].tenant.clone()),
            _ => Some(TENANTS[self.rng.random_range(0..TENANTS.len())].to_string()),
        };
        let visible = scope.as_ref().is_none_or(|t| t == &self.model[i].tenant);
        let expected = Self::next_status(self.model[i].status, &body);
        let r = self.ledger().submit_blocking(submission(
            scope.as_deref(),
            vec![event(self.model[i].id, body.clone())],
        ));
        match (visible, expected, r) {
            (false, _, Err(LedgerError::Rejected(Rejection::NotFound(_)))) => {}
            (true, None, Err(LedgerError::Rejected(Rejection::InvalidTransition { .. }))) => {
                self.seen.refused_events += 1;
            }
            (true, Some(status), Ok(done)) => {
                let a = &done.actions[0];
                let m = &mut self.model[i];
                m.status = status;
                m.version += 1;
                m.updated_at = done.recorded_at;
                assert_eq!(
                    (a.status, a.version),
                    (m.status, m.version),
                    "seed {}",
                    self.seed
                );
            }
            (v, e, other) => panic!(
                "seed {}: {body:?} on {:?} (visible {v}, expected {e:?}) gave {other:?}",
                self.seed, self.model[i]
            ),
        }
    }

    /// One record creating an action and moving it along by uid.
    pub fn batch(&mut self) {
        let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())];
        let mut c = self.rand_create(tenant);
        self.uids += 1;
        let uid = format!("m-{}-{}", self.seed, self.uids);
        c.uid = Some(uid.clone());
        let bodies: Vec<EventBody> = (0..self.rng.random_range(1..3))
            .map(|_| self.rand_body())
            .collect();
        let mut status = Some(match c.status {
            InitialStatus::Queued => Status::Queued,
            InitialStatus::Running => Status::Running,
        });
        for b in &bodies {
            status = status.and_then(|s| Self::next_status(s, b));
        }
        let mut commands = vec![Command::Create(c.clone())];
        for b in &bodies {
            commands.push(Command::Event(RecordEvent {
                action: ActionRef::Uid(uid.clone()),
                expected_version: None,
                body: b.clone(),
            }));
        }
        let commands_len = commands.len();
        let r = self.ledger().submit_blocking(submission(None, commands));
        match (status, r) {
            (Some(status), Ok(done)) => {
                self.push_created(&c, &done.actions[0]);
                let m = self.model.last_mut().expect("just pushed");
                m.status = status;
                m.version = 1 + bodies.len() as u64;
                m.updated_at = done.recorded_at;
                let a = done.actions.last().expect("answers");
                assert_eq!(
                    (a.status, a.version),
                    (m.status, m.version),
                    "seed {}",
                    self.seed
                );
            }
            // A refused command of a multi-command batch is reported with its index (an event,
            // so never the create at 0).
            (
                None,
                Err(LedgerError::CommandRejected {
                    index,
                    rejection: Rejection::InvalidTransition { .. },
                }),
            ) if (1..commands_len).contains(&index) => {}
            (s, other) => panic!("seed {}: batch (expected {s:?}) gave {other:?}", self.seed),
        }
    }

    /// A create with an `Idempotency-Key`, sometimes repeated with the same or another body.
    pub fn idempotent(&mut self) {
        let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())].to_string();
        let key = format!("k{}", self.rng.random_range(0..4));
        let variant: u8 = self.rng.random_range(0..2);
        let mut c = CreateAction::new(&tenant, "snapshot", "droplet", &variant.to_string());
        c.kind = Kind::Other;
        let mut s = submission(Some(&tenant), vec![Command::Create(c.clone())]);
        s.idempotency = Some(IdempotencyStamp {
            tenant: tenant.clone(),
            key: key.clone(),
            request_digest: [variant; 32],
        });
        let before = self.ledger().committed_position();
        let r = self.ledger().submit_blocking(s);
        match (
            self.idempotent.get(&(tenant.clone(), key.clone())).cloned(),
            r,
        ) {
            (None, Ok(done)) => {
                assert!(!done.replayed);
                self.push_created(&c, &done.actions[0]);
                let answer = done.actions.iter().map(|a| (a.id, a.version)).collect();
                self.idempotent
                    .insert((tenant, key), ([variant; 32], done.position, answer));
            }
            (Some((digest, position, answer)), Ok(done)) if digest == [variant; 32] => {
                assert!(done.replayed, "seed {}", self.seed);
                assert_eq!(done.position, position, "seed {}", self.seed);
                let got: Vec<_> = done.actions.iter().map(|a| (a.id, a.version)).collect();
                assert_eq!(got, answer, "seed {}: the first answer", self.seed);
                assert_eq!(
                    self.ledger().committed_position(),
                    before,
                    "nothing recorded"
                );
                self.seen.replays += 1;
            }
            (Some(_), Err(LedgerError::Rejected(Rejection::IdempotencyKeyReused { .. }))) => {
                assert_eq!(self.ledger().committed_position(), before);
                self.seen.key_reused += 1;
            }
            (seen, other) => panic!(
                "seed {}: idempotent (seen {seen:?}) gave {other:?}",
                self.seed
            ),
        }
    }

    /// Several threads race exclusive creates on one resource: one wins if it is free.
    pub fn race(&mut self) {
        let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())];
        let resource = self.rand_resource();
        let holder = self.holder(tenant, &resource);
        let n = self.rng.random_range(2..5);
        let creates: Vec<CreateAction> = (0..n)
            .map(|_| {
                let mut c = self.rand_create(tenant);
                c.resource = resource.clone();
                c.exclusive = true;
                c
            })
            .collect();
        let ledger = self.ledger();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = creates
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        ledger.submit_blocking(submission(None, vec![Command::Create(c.clone())]))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        match holder {
            Some(_) => assert!(
                winners.is_empty(),
                "seed {}: busy resource was taken",
                self.seed
            ),
            None => assert_eq!(winners.len(), 1, "seed {}: exactly one winner", self.seed),
        }
        let blocking_expected = match winners.first() {
            Some(&w) => results[w].as_ref().map(|d| d.actions[0].id).ok(),
            None => holder,
        };
        for r in &results {
            match r {
                Ok(_) => {}
                Err(LedgerError::Rejected(Rejection::ResourceBusy { blocking, .. })) => {
                    assert_eq!(Some(*blocking), blocking_expected, "seed {}", self.seed)
                }
                Err(e) => panic!("seed {}: race gave {e}", self.seed),
            }
        }
        if let Some(&w) = winners.first() {
            let a = results[w].as_ref().expect("winner").actions[0].clone();
            self.push_created(&creates[w], &a);
            self.seen.races_won += 1;
        }
    }

    /// One random command.
    pub fn step(&mut self) {
        match self.rng.random_range(0..20) {
            0..=6 => {
                let tenant = TENANTS[self.rng.random_range(0..TENANTS.len())];
                let mut c = self.rand_create(tenant);
                c.exclusive = self.rng.random_bool(0.25);
                self.create(c);
            }
            7..=13 => self.event(),
            14 | 15 => self.batch(),
            16 | 17 => self.idempotent(),
            _ => self.race(),
        }
    }

    // ------------------------------------------------------------------------------------
    // Queries.

    pub fn rand_query(&mut self) -> ActionQuery {
        let rng = &mut self.rng;
        let mut q = ActionQuery {
            limit: rng.random_range(1..=6),
            ..Default::default()
        };
        if rng.random_bool(0.8) {
            q.tenant = Some(TENANTS[rng.random_range(0..TENANTS.len())].into());
        }
        if rng.random_bool(0.3) {
            q.resource = Some(ResourceRef {
                resource_type: RESOURCE_TYPES[rng.random_range(0..RESOURCE_TYPES.len())].into(),
                id: rng.random_range(0..RESOURCE_IDS).to_string(),
            });
        }
        if rng.random_bool(0.1) {
            q.resource_type =
                Some(RESOURCE_TYPES[rng.random_range(0..RESOURCE_TYPES.len())].into());
        }
        if rng.random_bool(0.25) {
            for _ in 0..rng.random_range(1..3) {
                q.statuses
                    .push(Status::ALL[rng.random_range(0..Status::ALL.len())]);
            }
        }
        if rng.random_bool(0.2) {
            q.action_type = Some(TYPES[rng.random_range(0..TYPES.len())].into());
        }
        if rng.random_bool(0.15) {
            q.user = Some(["alice", "bob"][rng.random_range(0..2)].into());
        }
        if rng.random_bool(0.15) {
            q.kind = Some(KINDS[rng.random_range(0..KINDS.len())]);
        }
        let times: Vec<(Micros, Micros)> = self
            .model
            .iter()
            .map(|a| (a.created_at, a.updated_at))
            .collect();
        if !times.is_empty() {
            let pick = |rng: &mut SmallRng, i: usize| -> Micros {
                let (c, u) = times[rng.random_range(0..times.len())];
                [c, u][i] + rng.random_range(-1..=1)
            };
            if rng.random_bool(0.12) {
                q.created_since = Some(pick(rng, 0));
            }
            if rng.random_bool(0.12) {
                q.created_until = Some(pick(rng, 0));
            }
            if rng.random_bool(0.12) {
                q.updated_since = Some(pick(rng, 1));
            }
            if rng.random_bool(0.06) {
                q.updated_until = Some(pick(rng, 1));
            }
        }
        if rng.random_bool(0.06) {
            let n = self.model.len() as u64 + 2;
            for _ in 0..rng.random_range(1..5) {
                q.ids.push(rng.random_range(1..=n));
            }
        }
        q
    }

    /// Brute force: the ids the model says match, newest first.
    pub fn expected(&self, q: &ActionQuery) -> Vec<ActionId> {
        let mut out: Vec<ActionId> = self
            .model
            .iter()
            .filter(|a| {
                let mut ok = true;
                if let Some(t) = &q.tenant {
                    ok &= &a.tenant == t;
                }
                if let Some(r) = &q.resource {
                    ok &= &a.resource == r || a.related.iter().any(|x| x == r);
                }
                if let Some(t) = &q.resource_type {
                    ok &= &a.resource.resource_type == t
                        || a.related.iter().any(|x| &x.resource_type == t);
                }
                if !q.statuses.is_empty() {
                    ok &= q.statuses.contains(&a.status);
                }
                if let Some(t) = &q.action_type {
                    ok &= &a.action_type == t;
                }
                if let Some(u) = &q.user {
                    ok &= a.user.as_deref() == Some(u.as_str());
                }
                if let Some(k) = q.kind {
                    ok &= a.kind == k;
                }
                if let Some(t) = q.created_since {
                    ok &= a.created_at >= t;
                }
                if let Some(t) = q.created_until {
                    ok &= a.created_at < t;
                }
                if let Some(t) = q.updated_since {
                    ok &= a.updated_at >= t;
                }
                if let Some(t) = q.updated_until {
                    ok &= a.updated_at < t;
                }
                if !q.ids.is_empty() {
                    ok &= q.ids.contains(&a.id);
                }
                ok
            })
            .map(|a| a.id)
            .collect();
        out.reverse();
        out
    }

    fn check_page_actions(&self, q: &ActionQuery, page: &Page) {
        for a in &page.actions {
            let m = &self.model[(a.id - 1) as usize];
            assert_eq!(
                (
                    &a.tenant,
                    a.status,
                    a.version,
                    a.created_at,
                    a.updated_at,
                    &a.resource,
                    &a.action_type,
                    a.kind,
                    &a.user
                ),
                (
                    &m.tenant,
                    m.status,
                    m.version,
                    m.created_at,
                    m.updated_at,
                    &m.resource,
                    &m.action_type,
                    m.kind,
                    &m.user
                ),
                "seed {}: action {} in answer to {q:?}",
                self.seed,
                a.id
            );
        }
    }

    /// Pages through `q` with cursors (creating actions between pages when `inserts`) and
    /// with an offset, comparing every answer with the model.
    pub fn check_query(&mut self, q: &ActionQuery, inserts: bool) {
        let seed = self.seed;
        let expected = self.expected(q);
        let list = |w: &mut World, q: &ActionQuery| -> Page {
            let page = w
                .projection()
                .list(q)
                .unwrap_or_else(|e| panic!("seed {seed}: {q:?}: {e}"));
            // The in-memory answer, when there is one, is the same page.
            if let Some(memory) = w.projection().list_in_memory(q).unwrap() {
                assert_eq!(memory, page, "seed {seed}: in-memory answer to {q:?}");
                w.seen.in_memory_answers += 1;
            }
            page
        };

        if self.rng.random_bool(0.3) {
            let offset = self.rng.random_range(0..4usize);
            let oq = ActionQuery {
                offset: offset as u64,
                ..q.clone()
            };
            let page = list(self, &oq);
            let want: Vec<ActionId> = expected
                .iter()
                .copied()
                .skip(offset)
                .take(q.limit)
                .collect();
            let got: Vec<ActionId> = page.actions.iter().map(|a| a.id).collect();
            assert_eq!(got, want, "seed {seed}: offset page of {oq:?}");
            assert_eq!(
                page.total,
                expected.len() as u64,
                "seed {seed}: total of {oq:?}"
            );
            assert_eq!(
                page.next_cursor.is_some(),
                offset + q.limit < expected.len(),
                "seed {seed}"
            );
        }

        let mut got: Vec<ActionId> = Vec::new();
        let mut cursor: Option<String> = None;
        for round in 0.. {
            assert!(
                round <= expected.len() + 1,
                "seed {seed}: paging does not end"
            );
            let pq = ActionQuery {
                cursor: cursor.clone(),
                ..q.clone()
            };
            let page = list(self, &pq);
            assert_eq!(
                page.total,
                self.expected(q).len() as u64,
                "seed {seed}: total of {pq:?} (after {round} pages)"
            );
            self.check_page_actions(q, &page);
            got.extend(page.actions.iter().map(|a| a.id));
            match page.next_cursor {
                None => break,
                Some(c) => {
                    assert_eq!(
                        page.actions.len(),
                        q.limit,
                        "seed {seed}: a full page before the last"
                    );
                    if round == 0 {
                        let other = ActionQuery {
                            tenant: Some("someone-else".into()),
                            cursor: Some(c.clone()),
                            ..q.clone()
                        };
                        assert!(
                            matches!(
                                self.projection().list(&other),
                                Err(QueryError::BadCursor(_))
                            ),
                            "seed {seed}: a cursor is bound to its filters"
                        );
                    }
                    cursor = Some(c);
                }
            }
            if inserts && self.rng.random_bool(0.6) {
                // New actions that match the query as often as possible: they have higher
                // ids, so they must not show up on later pages.
                let tenant = q.tenant.clone().unwrap_or_else(|| TENANTS[0].into());
                let mut c = self.rand_create(&tenant);
                if let Some(r) = &q.resource {
                    c.resource = r.clone();
                }
                if let Some(t) = &q.action_type {
                    c.action_type = t.clone();
                }
                self.create(c);
                self.seen.inserts_between_pages += 1;
            }
        }
        assert_eq!(got, expected, "seed {seed}: cursor pages of {q:?}");
        self.seen.nonempty_answers += u64::from(!expected.is_empty());
        self.seen.multi_page_answers += u64::from(expected.len() > q.limit);
    }

    /// Answers of `queries`, for comparisons across reopen and rebuild.
    pub fn answers(&self, queries: &[ActionQuery]) -> Vec<Result<Page, QueryError>> {
        queries.iter().map(|q| self.projection().list(q)).collect()
    }
}

pub fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("ACTION_LEDGER_MODEL_SEED") {
        return vec![s.parse().expect("ACTION_LEDGER_MODEL_SEED is a number")];
    }
    let n = std::env::var("ACTION_LEDGER_MODEL_SEEDS")
        .map(|s| s.parse().expect("ACTION_LEDGER_MODEL_SEEDS is a number"))
        .unwrap_or(default);
    (0..n).map(|i| 0x5eed_0000 + i).collect()
}

/// Runs `f(seed)` and names the seed if it panics.
pub fn with_seed(seed: u64, f: impl FnOnce(u64)) {
    if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed))) {
        eprintln!("failing seed: {seed} (rerun with ACTION_LEDGER_MODEL_SEED={seed})");
        std::panic::resume_unwind(e);
    }
}

#[test]
fn projection_answers_match_a_naive_model() {
    // Goal: every acceptance decision and every query answer (pages, totals, cursors with
    // creates between pages, offsets) agrees with a brute-force model, before and after a
    // reopen.
    let mut seen = Vec::new();
    for seed in seeds(6) {
        with_seed(seed, |seed| {
            let tmp = tempfile::tempdir().unwrap();
            let mut w = World::new(seed, &tmp.path().join("projection"));
            for round in 0..4 {
                for _ in 0..60 {
                    w.step();
                }
                for _ in 0..12 {
                    let q = w.rand_query();
                    w.check_query(&q, true);
                }
                if round == 1 {
                    // Closing and reopening changes nothing.
                    w.reopen();
                }
            }
            // Projection-wide invariants against a fresh fold of the log.
            let report =
                action_ledger::projection::verify_projection(&w.sim, &log_dir(), w.projection())
                    .unwrap();
            assert!(
                report.is_consistent(),
                "seed {seed}: {:?}",
                report.differences
            );
            assert_eq!(report.actions, w.model.len() as u64);
            seen.push(w.seen);
        });
    }
    let total = |f: fn(&Exercised) -> u64| seen.iter().map(f).sum::<u64>();
    assert!(total(|e| e.busy_refusals) > 0, "{seen:?}");
    assert!(total(|e| e.races_won) > 0, "{seen:?}");
    assert!(total(|e| e.replays) > 0, "{seen:?}");
    assert!(total(|e| e.key_reused) > 0, "{seen:?}");
    assert!(total(|e| e.refused_events) > 0, "{seen:?}");
    assert!(total(|e| e.nonempty_answers) > 0, "{seen:?}");
    assert!(total(|e| e.multi_page_answers) > 0, "{seen:?}");
    assert!(total(|e| e.inserts_between_pages) > 0, "{seen:?}");
    assert!(total(|e| e.in_memory_answers) > 0, "{seen:?}");
    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!("exercised: {seen:?}");
    }
}
