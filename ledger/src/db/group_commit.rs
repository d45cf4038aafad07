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
    /// The committer, on `pool` (for SQLite, the one writer connection), on
    /// a thread of its own: its statements go to SQLite's thread one after
    /// another, and on the request workers each answer would wait in line
    /// behind HTTP work, stretching every batch under load.
    pub fn batched(pool: AnyPool) -> std::io::Result<GroupCommit> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tollgate-committer".into())
            .spawn(move || runtime.block_on(committer(pool, queue)))?;
        Ok(GroupCommit::Batched(jobs))
    }

    /// The committer as a task of the caller's runtime: on a test's
    /// single-threaded runtime, jobs submitted together make one batch.
    #[cfg(test)]
    fn batched_in_task(pool: AnyPool) -> GroupCommit {
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
    /// Runs the work in a savepoint (`first`: the batch's first job, with no
    /// savepoint before it to release). An error here (the savepoint itself
    /// failed: the connection is gone) aborts the whole batch.
    fn run<'a>(&'a mut self, tx: &'a mut Tx, first: bool)
        -> BoxFuture<'a, Result<(), sqlx::Error>>;
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
    fn run<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        first: bool,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Ok(());
            };
            // The job before this one is released in the same call (one round
            // trip to SQLite's worker thread), so savepoints never nest: SQLite
            // then checks one savepoint per page written, not one per job in
            // the batch, and empties the statement journal between jobs.
            // ROLLBACK TO below names this job's savepoint, the only one open.
            let open = if first {
                "SAVEPOINT job"
            } else {
                "RELEASE SAVEPOINT job; SAVEPOINT job"
            };
            sqlx::query(open).execute(&mut **tx).await?;
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
    for (i, job) in batch.iter_mut().enumerate() {
        // On error the transaction is dropped, which rolls it back.
        job.run(&mut tx, i == 0).await.map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{sqlite_pool, sqlite_url_with_create};

    async fn insert(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO t (k) VALUES ($1)")
            .bind(key)
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    async fn keys(tx: &mut Tx) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&mut **tx)
            .await
            .expect("keys")
    }

    /// Jobs of one batch: each sees the kept writes of the jobs before it,
    /// and a job that refuses or fails loses only its own writes.
    #[tokio::test]
    async fn a_refused_or_failed_job_rolls_back_only_its_own_writes() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("tollgate-gc-{}.db", std::process::id()));
        let url = sqlite_url_with_create(&format!("sqlite://{}", path.display()));
        let pool = sqlite_pool(&url, 1, false).await.expect("pool");
        sqlx::query("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .expect("table");
        sqlx::query("DELETE FROM t")
            .execute(&pool)
            .await
            .expect("empty");
        let writes = GroupCommit::batched_in_task(pool.clone());
        let job = |key: &'static str, verdict: &'static str| {
            let writes = writes.clone();
            async move {
                writes
                    .run(None, move |tx| {
                        Box::pin(async move {
                            insert(tx, key).await?;
                            let seen = keys(tx).await;
                            match verdict {
                                "keep" => Ok(Verdict::Keep(seen)),
                                "discard" => Ok(Verdict::Discard(seen)),
                                _ => Err(LedgerError::Internal("failed".into())),
                            }
                        })
                    })
                    .await
            }
        };
        // On this test's single-threaded runtime all five are queued before
        // the committer runs: one batch.
        let (a, b, c, d, e) = tokio::join!(
            job("a", "keep"),
            job("b", "discard"),
            job("c", "keep"),
            job("d", "fail"),
            job("e", "keep"),
        );
        assert_eq!(a.expect("a"), ["a"]);
        assert_eq!(b.expect("b"), ["a", "b"]);
        assert_eq!(c.expect("c"), ["a", "c"]);
        assert!(d.is_err());
        assert_eq!(e.expect("e"), ["a", "c", "e"]);
        let stored: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .expect("stored");
        assert_eq!(stored, ["a", "c", "e"]);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
