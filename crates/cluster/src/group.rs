//! Group commit's gathering: which queued requests go out together.
//!
//! A request that finds its queue quiet goes out at once. When the queue
//! is busy, so busy that at its recent rate another request is due within
//! the window, the group also waits for what arrives within the window
//! after its first request, so that the requests of many contacts share
//! one etcd request instead of each paying for its own: an etcd transaction
//! costs etcd about half a millisecond of CPU whatever it carries, and on a
//! busy cluster etcd's CPU is what runs out first. The price is at most one
//! window of added latency, and only at rates where it buys a larger group.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a busy queue's group waits for more after its first request.
pub const GROUP_WINDOW: Duration = Duration::from_millis(2);

/// The weight of the latest group in the smoothed rate.
const RATE_WEIGHT: f64 = 0.25;

/// Gathers groups from one queue (see the module docs).
pub struct Gather {
    window: Duration,
    max: usize,
    /// When the previous group started gathering.
    last: Option<Instant>,
    /// Requests per second, smoothed over the recent groups.
    rate: f64,
}

impl Gather {
    /// Groups of at most `max`, waiting up to `window` when busy (a zero
    /// window never waits).
    pub fn new(window: Duration, max: usize) -> Self {
        Gather {
            window,
            max: max.max(1),
            last: None,
            rate: 0.0,
        }
    }

    /// The next group; `None` once the queue is closed and empty.
    pub async fn next<T>(&mut self, queue: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
        let first = queue.recv().await?;
        let started = Instant::now();
        let mut group = vec![first];
        take_queued(queue, &mut group, self.max);
        if let Some(last) = self.last {
            // What queued since the previous group started, over that time.
            let gap = started.duration_since(last).as_secs_f64().max(1e-6);
            let now = group.len() as f64 / gap;
            self.rate += RATE_WEIGHT * (now - self.rate);
        }
        self.last = Some(started);
        if self.rate * self.window.as_secs_f64() >= 1.0 {
            let until = started + self.window;
            while group.len() < self.max {
                match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(more)) => {
                        group.push(more);
                        take_queued(queue, &mut group, self.max);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        Some(group)
    }
}

/// Adds to `group` what is queued already, up to `max` in the group.
pub(crate) fn take_queued<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    group: &mut Vec<T>,
    max: usize,
) {
    while group.len() < max {
        match queue.try_recv() {
            Ok(more) => group.push(more),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);

    /// Sends one request every `every`, `n` times, each gathered alone.
    async fn steady(
        gather: &mut Gather,
        tx: &mpsc::UnboundedSender<u32>,
        rx: &mut mpsc::UnboundedReceiver<u32>,
        every: Duration,
        n: u32,
    ) {
        for i in 0..n {
            tokio::time::advance(every).await;
            tx.send(i).unwrap();
            let t0 = Instant::now();
            assert_eq!(gather.next(rx).await.map(|g| g.len()), Some(1));
            if t0.elapsed() > Duration::ZERO {
                return;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_queue_sends_at_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(WINDOW, 64);
        // 200 requests a second: another is due in 5 ms, not within 2.
        for i in 0..50 {
            tokio::time::advance(Duration::from_millis(5)).await;
            tx.send(i).unwrap();
            let t0 = Instant::now();
            assert_eq!(gather.next(&mut rx).await, Some(vec![i]));
            assert_eq!(t0.elapsed(), Duration::ZERO, "request {i} waited");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_queue_waits_one_window_for_more() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(WINDOW, 64);
        // 2,000 requests a second: the rate builds up until groups wait.
        steady(&mut gather, &tx, &mut rx, Duration::from_micros(500), 50).await;
        assert!(
            gather.rate * WINDOW.as_secs_f64() >= 1.0,
            "rate {}",
            gather.rate
        );
        tx.send(100).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.send(101).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            late.send(102).unwrap();
        });
        let t0 = Instant::now();
        assert_eq!(gather.next(&mut rx).await, Some(vec![100, 101]));
        assert_eq!(t0.elapsed(), WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_group_goes_without_waiting() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(WINDOW, 3);
        steady(&mut gather, &tx, &mut rx, Duration::from_micros(500), 50).await;
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

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_never_waits() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut gather = Gather::new(Duration::ZERO, 64);
        for i in 0..50 {
            tokio::time::advance(Duration::from_micros(10)).await;
            tx.send(i).unwrap();
            let t0 = Instant::now();
            assert_eq!(gather.next(&mut rx).await, Some(vec![i]));
            assert_eq!(t0.elapsed(), Duration::ZERO);
        }
    }
}
