//! Group commit: authorizations and settlements that arrive together share
//! one durable commit, so the fsync that bounds a one-commit-per-request
//! ledger is paid once per batch.
//!
//! On SQLite (one writer) a committer task owns the batch. Jobs run one
//! after another, each inside its own savepoint, so every conditional check
//! (balance, limits, hold state) sees the writes of the jobs before it
//! exactly as if each had committed alone; a job that refuses or fails is
//! rolled back to its savepoint without touching the others. A caller gets its answer only
//! after the batch's COMMIT has returned: nothing is acknowledged that a
//! crash could still lose.
//!
//! On PostgreSQL each job is its own transaction on a pooled connection:
//! the server already flushes the WAL of concurrent commits together, and
//! batching across requests there would let two sidecars' batches lock the
//! same wallets and revenue accounts in opposite orders (a deadlock, which
//! PostgreSQL breaks only after a second).

use std::future::Future;
use std::pin::Pin;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::{LedgerError, LedgerResult};
use crate::faults;
use crate::metrics;
use crate::money::book::Tx;

/// What a job decided: keep its writes, or roll them back and still answer.
pub enum Verdict<T> {
    Keep(T),
    Discard(T),
}

/// The most jobs one transaction carries. Larger batches gain little once the
/// commit is amortised, and keep the writer lock for longer.
const MAX_BATCH: usize = 256;
/// Jobs waiting for the committer before callers wait to queue.
const QUEUE: usize = 4096;

type Work<T> =
    Box<dyn for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, LedgerResult<Verdict<T>>> + Send>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Crash-test points paused at around the batch's commit (see [`faults`]).
#[derive(Clone, Copy)]
pub struct CommitPoints {
    pub before: &'static str,
    pub after: &'static str,
}

/// The handle callers submit jobs through; cheap to clone.
#[derive(Clone)]
pub enum GroupCommit {
    /// Jobs queue for the committer, which owns the one writer connection.
    Batched(mpsc::Sender<Box<dyn Job>>),
    /// Each job commits on its own connection from the pool.
    PerJob(AnyPool),
}

impl GroupCommit {
    /// The committer task, on `pool` (for SQLite, the one writer connection).
    pub fn batched(pool: AnyPool) -> GroupCommit {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(committer(pool, queue));
        GroupCommit::Batched(jobs)
    }

    /// One transaction per job, run by the caller.
    pub fn per_job(pool: AnyPool) -> GroupCommit {
        GroupCommit::PerJob(pool)
    }

    /// Runs `work` and answers once its writes are durable.
    pub async fn run<T, F>(&self, points: Option<CommitPoints>, work: F) -> LedgerResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, LedgerResult<Verdict<T>>> + Send + 'static,
    {
        let jobs = match self {
            GroupCommit::Batched(jobs) => jobs,
            GroupCommit::PerJob(pool) => return run_alone(pool, points, work).await,
        };
        let (reply, answer) = oneshot::channel();
        let job = Pending {
            work: Some(Box::new(work) as Work<T>),
            result: None,
            reply,
            points,
        };
        jobs.send(Box::new(job)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run_alone<T, F>(pool: &AnyPool, points: Option<CommitPoints>, work: F) -> LedgerResult<T>
where
    F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, LedgerResult<Verdict<T>>>,
{
    let mut tx = pool.begin().await?;
    match work(&mut tx).await? {
        Verdict::Keep(t) => {
            if let Some(p) = points {
                faults::pause(p.before).await;
            }
            tx.commit().await?;
            if let Some(p) = points {
                faults::pause(p.after).await;
            }
            Ok(t)
        }
        Verdict::Discard(t) => {
            tx.rollback().await?;
            Ok(t)
        }
    }
}

fn stopped() -> LedgerError {
    LedgerError::Internal("the committer has stopped".into())
}

/// A job with its answer channel, erased so one batch can hold any kind.
pub trait Job: Send {
    /// Runs the work in a savepoint. An error here (the savepoint itself
    /// failed: the connection is gone) aborts the whole batch.
    fn run<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    fn points(&self) -> Option<CommitPoints>;
    /// Answers the caller: the job's own result if the batch committed.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<T> {
    work: Option<Work<T>>,
    result: Option<LedgerResult<T>>,
    reply: oneshot::Sender<LedgerResult<T>>,
    points: Option<CommitPoints>,
}

impl<T: Send + 'static> Job for Pending<T> {
    fn run<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Ok(());
            };
            // Never released: the batch's COMMIT releases them all, and each
            // statement saved is a round trip to SQLite's worker thread.
            // ROLLBACK TO names the latest savepoint of that name: this job's.
            sqlx::query("SAVEPOINT job").execute(&mut **tx).await?;
            let outcome = work(tx).await;
            if !matches!(outcome, Ok(Verdict::Keep(_))) {
                sqlx::query("ROLLBACK TO SAVEPOINT job")
                    .execute(&mut **tx)
                    .await?;
            }
            self.result = Some(outcome.map(|v| match v {
                Verdict::Keep(t) | Verdict::Discard(t) => t,
            }));
            Ok(())
        })
    }

    fn points(&self) -> Option<CommitPoints> {
        self.points
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let result = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(why), _) => Err(LedgerError::Internal(format!(
                "the batch did not commit: {why}"
            ))),
            (Ok(()), None) => Err(LedgerError::Internal("the job did not run".into())),
        };
        // The caller may have gone (its request was cancelled): nothing to tell.
        let _ = self.reply.send(result);
    }
}

async fn committer(pool: AnyPool, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        metrics::commit_batch(batch.len());
        let committed = commit(&pool, &mut batch).await;
        if let Err(e) = &committed {
            tracing::error!(error = %e, jobs = batch.len(), "a batch did not commit");
        }
        let committed = committed.as_ref().map(|_| ()).map_err(|e| e.as_str());
        for job in batch.drain(..) {
            job.answer(committed);
        }
    }
}

async fn commit(pool: &AnyPool, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        // On error the transaction is dropped, which rolls it back.
        job.run(&mut tx).await.map_err(|e| e.to_string())?;
    }
    let points = batch.iter().find_map(|j| j.points());
    if let Some(p) = points {
        faults::pause(p.before).await;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    if let Some(p) = points {
        faults::pause(p.after).await;
    }
    Ok(())
}
