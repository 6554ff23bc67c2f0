//! The read pool: OS threads of their own, sized to the cores by default (`read_threads`),
//! that run the handlers' short projection reads — one action, a list page, an idempotency
//! record — off the async workers (ARCHITECTURE.md, invariant 9).
//!
//! Why not tokio's `spawn_blocking`: its pool wakes an idle thread for every call and grows to
//! one thread per concurrent read (up to 512), so under load the reads of a 2-core machine
//! spend their time parking and waking threads (docs/performance.md, "Get one, located":
//! ~26% of the server's time for a get). Here a fixed set of threads takes reads from one
//! queue; a thread that finds the queue non-empty takes the next read without sleeping.
//!
//! Scans — histograms, `/api/v1/log` pages, watch streams' chunks of records — stay on
//! `spawn_blocking` ([`super::blocking`]): one of them here would hold a pool thread for as
//! long as it scans, in front of the short reads waiting behind it. (An action's history is
//! one action's records; a console export is a list read page by page: both come here.)
//!
//! The queue has no limit of its own: each request waits for its read before it asks for
//! another, so at most the in-flight requests the listeners admit (`connections_max` each)
//! wait in it. A read whose request has gone (timed out, client closed) is dropped unread
//! when a thread reaches it.

use super::error::ApiError;
use std::panic::AssertUnwindSafe;

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the pool; clones share it. The threads end when the last handle is dropped.
#[derive(Clone)]
pub struct ReadPool {
    queue: crossbeam_channel::Sender<Job>,
    threads: usize,
}

impl ReadPool {
    /// Starts `threads` reader threads; 0: one per core.
    pub fn start(threads: usize) -> std::io::Result<ReadPool> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("ledger-read-{i}"))
                .spawn(move || {
                    for job in jobs {
                        job();
                    }
                })?;
        }
        Ok(ReadPool { queue, threads })
    }

    /// The number of reader threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Reads waiting for a thread now.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Runs `read` on a pool thread and returns its answer. A panic in `read` is a 500 (its
    /// cause logged); the thread lives on.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if reply.is_closed() {
                return;
            }
            let _ = reply.send(std::panic::catch_unwind(AssertUnwindSafe(read)));
        });
        self.queue
            .send(job)
            .map_err(|_| ApiError::internal("the read pool has stopped"))?;
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(ApiError::internal(format!(
                "a read panicked: {}",
                panic_message(&*panic)
            ))),
            Err(_) => Err(ApiError::internal("the read pool has stopped")),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[tokio::test]
    async fn reads_run_on_the_pool_threads_and_answer() {
        let pool = ReadPool::start(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let name = pool
            .run(|| Ok(std::thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("ledger-read-"));
        let e = pool
            .run(|| -> Result<(), _> { Err(ApiError::not_found("action 7")) })
            .await
            .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        // Zero threads asked for is one per core.
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(ReadPool::start(0).unwrap().threads(), cores);
    }

    #[tokio::test]
    async fn a_panicking_read_is_a_500_and_the_thread_serves_the_next() {
        let pool = ReadPool::start(1).unwrap();
        let e = pool
            .run(|| -> Result<(), ApiError> { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(pool.run(|| Ok(41 + 1)).await.unwrap(), 42);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_wait_their_turn_and_an_abandoned_one_is_not_run() {
        let pool = ReadPool::start(1).unwrap();
        // Hold the only thread until the queue is in place.
        let gate = Arc::new(Barrier::new(2));
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (gate.clone(), started.clone());
        let first = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move || {
                    s.store(true, std::sync::atomic::Ordering::SeqCst);
                    g.wait();
                    Ok(1)
                })
                .await
            }
        });
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let abandoned = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    r.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                })
                .await
            })
        };
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        let third = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| Ok(3)).await })
        };
        while pool.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        gate.wait();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(third.await.unwrap().unwrap(), 3);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
