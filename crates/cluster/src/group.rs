//! Group commit's gathering: which queued requests go out together.
//!
//! A request that finds its queue idle goes out at once. When the queue is
//! busy (its previous group went out less than [`BUSY_FOR`] × the window
//! ago) the group also waits for what arrives within the window after its
//! first request, so that at a steady rate the requests of many contacts
//! share one etcd request instead of each paying for its own: an etcd
//! transaction costs etcd about half a millisecond of CPU whatever it
//! carries, and on a busy cluster etcd's CPU is what runs out first. The
//! price is at most one window of added latency, and only under load.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a busy queue's group waits for more after its first request.
pub const GROUP_WINDOW: Duration = Duration::from_millis(2);

/// A queue is busy when its previous group went out less than this many
/// windows ago.
pub const BUSY_FOR: u32 = 5;

/// Gathers groups from one queue (see the module docs).
pub struct Gather {
    window: Duration,
    max: usize,
    last: Option<Instant>,
}

impl Gather {
    /// Groups of at most `max`, waiting up to `window` when busy (a zero
    /// window never waits).
    pub fn new(window: Duration, max: usize) -> Self {
        Gather {
            window,
            max: max.max(1),
            last: None,
        }
    }

    /// The next group; `None` once the queue is closed and empty.
    pub async fn next<T>(&mut self, queue: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
        let first = queue.recv().await?;
        let started = Instant::now();
        let busy = self
            .last
            .is_some_and(|last| started.duration_since(last) < self.window * BUSY_FOR);
        let mut group = vec![first];
        self.take_queued(queue, &mut group);
        if busy && !self.window.is_zero() {
            let until = started + self.window;
            while group.len() < self.max {
                match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(more)) => {
                        group.push(more);
                        self.take_queued(queue, &mut group);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        self.last = Some(Instant::now());
        Some(group)
    }

    fn take_queued<T>(&self, queue: &mut mpsc::UnboundedReceiver<T>, group: &mut Vec<T>) {
        while group.len() < self.max {
            match queue.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_queue_sends_at_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(Duration::from_millis(2), 64);
        tx.send(1).unwrap();
        let t0 = Instant::now();
        assert_eq!(gather.next(&mut rx).await, Some(vec![1]));
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // Long after: idle again, no waiting.
        tokio::time::advance(Duration::from_millis(50)).await;
        tx.send(2).unwrap();
        let t1 = Instant::now();
        assert_eq!(gather.next(&mut rx).await, Some(vec![2]));
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_queue_waits_one_window_for_more() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(Duration::from_millis(2), 64);
        tx.send(0).unwrap();
        assert_eq!(gather.next(&mut rx).await, Some(vec![0]));
        tx.send(1).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.send(2).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            late.send(3).unwrap();
        });
        let t0 = Instant::now();
        assert_eq!(gather.next(&mut rx).await, Some(vec![1, 2]));
        assert_eq!(t0.elapsed(), Duration::from_millis(2));
        assert_eq!(gather.next(&mut rx).await, Some(vec![3]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_group_goes_without_waiting() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(Duration::from_millis(2), 3);
        tx.send(0).unwrap();
        assert_eq!(gather.next(&mut rx).await, Some(vec![0]));
        for i in 1..=4 {
            tx.send(i).unwrap();
        }
        let t0 = Instant::now();
        assert_eq!(gather.next(&mut rx).await, Some(vec![1, 2, 3]));
        assert_eq!(t0.elapsed(), Duration::ZERO);
        drop(tx);
        assert_eq!(gather.next(&mut rx).await, Some(vec![4]));
        assert_eq!(gather.next(&mut rx).await, None);
    }
}
