//! [`Leadership`]: the task that makes a node the leader and keeps it so only while that is
//! safe.
//!
//! It acquires the lease when it is free or expired, renews it every ttl/3, and **steps
//! down at once** when a renewal is refused (deposed, lease expired), when its connection to
//! PostgreSQL ends, or when a renewal cannot complete before the lease would expire. That
//! last bound is measured on the local monotonic clock from the *start* of the last
//! successful renewal (PostgreSQL started the lease no earlier than that), less
//! [`CLUSTER_LEASE_LOCAL_MARGIN_PERCENT`] of the lease time: the node stops appending before
//! any other node can acquire the lease.
//!
//! The role is published on a [`watch`] channel ([`Role`]). The writer must not rely on the
//! channel alone (a watch value is only as fresh as the task's last wake-up): before each
//! append it takes [`Leadership::term`], which checks the local deadline synchronously and
//! is `None` past it, whatever the task is doing. The append itself is fenced in PostgreSQL
//! as well (src/cluster/store.rs), so a leader that is wrong about its role appends nothing.

use super::{Acquire, ClusterLog, ClusterOptions, Contact, Head, Lease};
use crate::limits::CLUSTER_LEASE_LOCAL_MARGIN_PERCENT;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What this node is, as last decided by its [`Leadership`] task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node holds the lease of `epoch` and may append.
    Leader { epoch: u64 },
    /// Another node (or none) leads. `leader` is `(node_id, advertise_url)` of the holder of
    /// a lease that was valid when last read; `epoch` is the last epoch seen.
    Follower {
        leader: Option<(String, String)>,
        epoch: u64,
    },
}

impl Role {
    /// The epoch this node leads, or the last one it has seen.
    pub fn epoch(&self) -> u64 {
        match self {
            Role::Leader { epoch } | Role::Follower { epoch, .. } => *epoch,
        }
    }
}

/// A leadership term as the writer uses it: the lease to fence appends with (its
/// `valid_until` is the local deadline, margin included) and the head the leader continues
/// from as of the acquisition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub lease: Lease,
    pub head: Head,
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDownReason {
    /// PostgreSQL refused the renewal: another node took over, or the lease had lapsed.
    Refused(String),
    /// The connection to PostgreSQL ended or a statement on it failed.
    ConnectionLost(String),
    /// The renewal did not complete before the local deadline.
    RenewalTimedOut,
}

/// A step-down, for operators (and tests): which epoch ended, why, when, and the local
/// deadline it ended before.
#[derive(Clone, Debug)]
pub struct StepDown {
    pub epoch: u64,
    pub reason: StepDownReason,
    pub at: Instant,
    /// The deadline of the lease held then; `at` is before it unless the renewal timed out.
    pub deadline: Instant,
}

#[derive(Default)]
struct Shared {
    term: Option<Term>,
    last_step_down: Option<StepDown>,
    step_downs: u64,
}

/// The leadership task of one node. Dropping it aborts the task (the lease is then simply
/// left to expire, as when the process dies).
pub struct Leadership {
    role: watch::Receiver<Role>,
    tx: Arc<watch::Sender<Role>>,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Leadership {
    /// Starts the task (inside a Tokio runtime). It connects on its own, and reconnects after
    /// losing its connection; until it knows better the node is a follower of no known
    /// leader.
    pub fn start(options: ClusterOptions) -> Leadership {
        Leadership::start_with(options, Arc::default())
    }

    /// [`Leadership::start`], noting every answer from PostgreSQL (an acquisition, a renewal,
    /// the lease holder read) in `contact`.
    pub fn start_with(options: ClusterOptions, contact: Arc<Contact>) -> Leadership {
        let (tx, role) = watch::channel(Role::Follower {
            leader: None,
            epoch: 0,
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        let tx = Arc::new(tx);
        let task = tokio::spawn(run(options, tx.clone(), shared.clone(), contact));
        Leadership {
            role,
            tx,
            shared,
            task,
        }
    }

    /// The role channel.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The current term, only while this node leads and its local deadline has not passed.
    /// The writer takes it before every append and appends nothing without it.
    pub fn term(&self) -> Option<Term> {
        let shared = self.shared.lock().expect("leadership state");
        shared
            .term
            .clone()
            .filter(|t| Instant::now() < t.lease.valid_until)
    }

    /// The last step-down, if any.
    pub fn last_step_down(&self) -> Option<StepDown> {
        self.shared
            .lock()
            .expect("leadership state")
            .last_step_down
            .clone()
    }

    /// How many times this node stepped down.
    pub fn step_downs(&self) -> u64 {
        self.shared.lock().expect("leadership state").step_downs
    }

    /// Stops the task, as a crash would (the lease is not released). The term is over at
    /// once: [`Leadership::term`] is `None` from now on.
    pub fn abort(&self) {
        self.task.abort();
        self.shared.lock().expect("leadership state").term = None;
        self.tx.send_if_modified(|role| match *role {
            Role::Leader { epoch } => {
                *role = Role::Follower {
                    leader: None,
                    epoch,
                };
                true
            }
            Role::Follower { .. } => false,
        });
    }

    /// Stops the task, as a crash would (the lease is not released), and returns the last
    /// term it held, whether or not its deadline has passed.
    pub async fn stop(mut self) -> Option<Term> {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.shared.lock().expect("leadership state").term.clone()
    }
}

/// The local deadline of a lease: its `valid_until` (request start + remaining time as
/// PostgreSQL reported it) less the margin.
fn local_deadline(lease: &Lease, ttl: Duration) -> Instant {
    let margin = ttl * CLUSTER_LEASE_LOCAL_MARGIN_PERCENT / 100;
    lease
        .valid_until
        .checked_sub(margin)
        .unwrap_or(lease.valid_until)
}

async fn run(
    options: ClusterOptions,
    tx: Arc<watch::Sender<Role>>,
    shared: Arc<Mutex<Shared>>,
    contact: Arc<Contact>,
) {
    let retry = options.lease_ttl / 3;
    let mut log: Option<ClusterLog> = None;
    let mut last_epoch = 0u64;
    loop {
        if log.as_ref().is_none_or(|l| l.is_closed()) {
            log = None;
            match ClusterLog::connect(options.clone()).await {
                Ok(l) => log = Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "leadership: cannot reach the cluster log");
                    tx.send_if_modified(|r| set_follower(r, None, last_epoch));
                    tokio::time::sleep(retry).await;
                    continue;
                }
            }
        }
        let conn = log.as_ref().expect("connected");
        match conn.acquire_lease().await {
            Ok(Acquire::Acquired { lease, head }) => {
                contact.touch();
                last_epoch = lease.epoch;
                tracing::info!(epoch = lease.epoch, position = head.position, "leading");
                let keep = lead(conn, &options, lease, head, &tx, &shared, &contact).await;
                if !keep {
                    log = None;
                }
                // Not straight back: let the step-down be seen, and a live leader be found.
                tokio::time::sleep(retry).await;
            }
            Ok(Acquire::HeldBy(info)) => {
                contact.touch();
                last_epoch = last_epoch.max(info.epoch);
                let leader = match (info.valid, info.holder, info.advertise_url) {
                    (true, Some(holder), url) => Some((holder, url.unwrap_or_default())),
                    _ => None,
                };
                tx.send_if_modified(|r| set_follower(r, leader, last_epoch));
                tokio::time::sleep(retry).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "leadership: acquiring the lease failed");
                log = None;
                tx.send_if_modified(|r| set_follower(r, None, last_epoch));
                tokio::time::sleep(retry).await;
            }
        }
    }
}

fn set_follower(role: &mut Role, leader: Option<(String, String)>, epoch: u64) -> bool {
    let new = Role::Follower { leader, epoch };
    if *role == new {
        return false;
    }
    *role = new;
    true
}

/// Leads until it must step down. Returns whether the connection is still usable.
async fn lead(
    log: &ClusterLog,
    options: &ClusterOptions,
    mut lease: Lease,
    head: Head,
    tx: &watch::Sender<Role>,
    shared: &Mutex<Shared>,
    contact: &Contact,
) -> bool {
    let ttl = options.lease_ttl;
    let epoch = lease.epoch;
    let mut deadline = local_deadline(&lease, ttl);
    // Renew a third of the way into the lease; `valid_until - ttl` is the request's start.
    let mut renew_at = lease.valid_until.checked_sub(ttl * 2 / 3);
    {
        let mut s = shared.lock().expect("leadership state");
        s.term = Some(Term {
            lease: Lease {
                valid_until: deadline,
                ..lease.clone()
            },
            head,
        });
    }
    tx.send_replace(Role::Leader { epoch });

    let step_down = |reason: StepDownReason, deadline: Instant| {
        {
            let mut s = shared.lock().expect("leadership state");
            s.term = None;
            // Taken once no term can be handed out any more: a term taken before `at`.
            let at = Instant::now();
            s.step_downs += 1;
            s.last_step_down = Some(StepDown {
                epoch,
                reason: reason.clone(),
                at,
                deadline,
            });
        }
        tx.send_replace(Role::Follower {
            leader: None,
            epoch,
        });
        tracing::warn!(epoch, ?reason, "stepped down");
    };

    loop {
        let tick = renew_at.unwrap_or_else(Instant::now);
        tokio::select! {
            biased;
            _ = log.closed() => {
                step_down(StepDownReason::ConnectionLost("connection closed".into()), deadline);
                return false;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                step_down(StepDownReason::RenewalTimedOut, deadline);
                return false;
            }
            _ = tokio::time::sleep_until(tick.into()) => {}
        }
        let started = Instant::now();
        let renewed = tokio::select! {
            biased;
            _ = log.closed() => Err(None),
            r = tokio::time::timeout_at(deadline.into(), log.renew_lease(&lease)) => match r {
                Err(_) => Err(None),
                Ok(r) => r.map_err(Some),
            },
        };
        match renewed {
            Ok(new) => {
                contact.touch();
                lease = new;
                deadline = local_deadline(&lease, ttl);
                renew_at = Some(started + ttl / 3);
                let mut s = shared.lock().expect("leadership state");
                if let Some(term) = s.term.as_mut() {
                    term.lease = Lease {
                        valid_until: deadline,
                        ..lease.clone()
                    };
                }
            }
            Err(None) if log.is_closed() => {
                step_down(
                    StepDownReason::ConnectionLost("connection closed".into()),
                    deadline,
                );
                return false;
            }
            Err(None) => {
                step_down(StepDownReason::RenewalTimedOut, deadline);
                // The renewal may still be stuck on this connection: start afresh.
                return false;
            }
            Err(Some(e)) if e.is_step_down() => {
                step_down(StepDownReason::Refused(e.to_string()), deadline);
                return true;
            }
            Err(Some(e)) => {
                step_down(StepDownReason::ConnectionLost(e.to_string()), deadline);
                return false;
            }
        }
    }
}
