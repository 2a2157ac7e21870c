//! Group commit: one thread drains a queue of jobs and handles everything
//! waiting as one batch (one durable transaction), so concurrent callers share
//! the cost of a disk flush. Meta and the datanode both use it.

use std::thread::JoinHandle;

use tokio::sync::mpsc;

pub struct GroupCommit<J: Send + 'static> {
    tx: Option<mpsc::UnboundedSender<J>>,
    thread: Option<JoinHandle<()>>,
}

/// The committer thread has stopped (its handler panicked or it was shut down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the commit thread has stopped")]
pub struct Stopped;

impl<J: Send + 'static> GroupCommit<J> {
    /// Starts a thread that calls `handle` with batches of at most `max_batch`
    /// jobs, each batch holding everything queued when the previous one ended.
    pub fn spawn(
        name: &str,
        max_batch: usize,
        mut handle: impl FnMut(Vec<J>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<J>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    handle(batch);
                }
            })?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn submit(&self, job: J) -> Result<(), Stopped> {
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|_| Stopped),
            None => Err(Stopped),
        }
    }
}

impl<J: Send + 'static> Drop for GroupCommit<J> {
    /// Lets queued jobs finish, then waits for the thread, so that whatever
    /// it holds (a database handle) is released when this returns.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
