//! Group commit: one thread drains a queue of jobs and handles everything
//! waiting as one batch (one durable transaction), so concurrent callers share
//! the cost of a disk flush. Meta and the datanode both use it.
//!
//! The queue is bounded: when it holds `queue` jobs, [`GroupCommit::submit`]
//! waits for room, so callers slow down to the disk's pace instead of
//! piling up memory.

use std::thread::JoinHandle;

use tokio::sync::mpsc;

pub struct GroupCommit<J: Send + 'static> {
    tx: Option<mpsc::Sender<J>>,
    thread: Option<JoinHandle<()>>,
}

/// The committer thread has stopped (its handler panicked or it was shut down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the commit thread has stopped")]
pub struct Stopped;

impl<J: Send + 'static> GroupCommit<J> {
    /// Starts a thread that calls `handle` with batches of at most `max_batch`
    /// jobs, each batch holding everything queued when the previous one
    /// ended. At most `queue` jobs wait (at least `max_batch`).
    pub fn spawn(
        name: &str,
        max_batch: usize,
        queue: usize,
        mut handle: impl FnMut(Vec<J>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<J>(queue.max(max_batch).max(1));
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

    /// A handle that queues jobs without keeping the committer alive (for
    /// a timer that submits work of its own).
    pub fn weak(&self) -> Option<mpsc::WeakSender<J>> {
        self.tx.as_ref().map(|t| t.downgrade())
    }

    /// Queues `job`, waiting while the queue is full.
    pub async fn submit(&self, job: J) -> Result<(), Stopped> {
        match &self.tx {
            Some(tx) => tx.send(job).await.map_err(|_| Stopped),
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A stalled committer makes submitters wait once the queue is full,
    /// and lets them on when it catches up.
    #[tokio::test]
    async fn a_full_queue_makes_submitters_wait() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let seen = Arc::new(Mutex::new(0usize));
        let s = seen.clone();
        let mut first = true;
        let group = GroupCommit::spawn("test-commit", 2, 4, move |jobs: Vec<u32>| {
            if first {
                first = false;
                let _ = gate.recv();
            }
            *s.lock().unwrap() += jobs.len();
        })
        .unwrap();
        // The thread takes one batch (and stalls), then 4 wait in the queue.
        group.submit(0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 1..=4 {
            group.submit(i).await.unwrap();
        }
        let full = tokio::time::timeout(Duration::from_millis(200), group.submit(5)).await;
        assert!(full.is_err(), "a submit to a full queue must wait");
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), group.submit(5))
            .await
            .expect("room once the committer catches up")
            .unwrap();
        drop(group);
        assert_eq!(*seen.lock().unwrap(), 6);
    }
}
