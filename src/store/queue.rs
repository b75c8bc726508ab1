//! The writer's queue: writes wait here for the next group commit.
//!
//! A mutex and a condition variable, not a channel, because the writer
//! waits in two ways a channel serves badly: until the next write comes
//! (or a deadline: the journal's sync, a checkpoint), and, under
//! concurrent load, until *enough* writes are queued to share one fsync
//! (or a deadline in microseconds). It sleeps in the kernel both times:
//! a spin on a 2-core gateway takes the core the HTTP workers need, and
//! tokio's timers have a resolution of a millisecond. A writer that queues
//! a write wakes the sleeping writer thread only when that write is the
//! one it waits for, so a batch of 16 costs one wake-up, not 16.
//!
//! At most [`BOUND`] writes are queued; a caller beyond that waits
//! (asynchronously) for room, so memory stays bounded under any load.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::writer::Op;

const BOUND: usize = 4096;

pub(super) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    room: Semaphore,
}

struct State {
    ops: VecDeque<Op>,
    /// No write is taken any more: every `Store` is gone, or the writer is.
    closed: bool,
    /// While the writer sleeps: how many queued writes wake it (0: awake).
    wake_at: usize,
}

/// Why [`Queue::push`] did not queue a write.
pub(super) struct Closed;

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            state: Mutex::new(State {
                ops: VecDeque::new(),
                closed: false,
                wake_at: 0,
            }),
            ready: Condvar::new(),
            room: Semaphore::new(BOUND),
        }
    }

    /// Queues a write for the writer, once there is room.
    pub(super) async fn push(&self, op: Op) -> Result<(), Closed> {
        // The permit is given back by the writer when it takes the write.
        self.room.acquire().await.map_err(|_| Closed)?.forget();
        let mut s = self.state.lock().unwrap();
        if s.closed {
            return Err(Closed);
        }
        s.ops.push_back(op);
        let wake = s.wake_at != 0 && s.ops.len() >= s.wake_at;
        if wake {
            s.wake_at = 0;
        }
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Moves queued writes into `batch` (up to `max` in all) once `want`
    /// of them are there, or once `until` has passed (with what there is,
    /// perhaps nothing). Without `until` it waits for `want`. Returns
    /// false when the queue is closed and empty: the writer's work is done.
    pub(super) fn take(&self, batch: &mut Vec<Op>, want: usize, until: Option<Instant>, max: usize) -> bool {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.ops.len() >= want.max(1) || s.closed {
                break;
            }
            let now = Instant::now();
            match until {
                Some(t) if t <= now => break,
                Some(t) => {
                    s.wake_at = want;
                    s = self.ready.wait_timeout(s, t - now).unwrap().0;
                }
                None => {
                    s.wake_at = want;
                    s = self.ready.wait(s).unwrap();
                }
            }
            s.wake_at = 0;
        }
        let n = s.ops.len().min(max.saturating_sub(batch.len()));
        batch.extend(s.ops.drain(..n));
        let open = !(s.closed && s.ops.is_empty() && batch.is_empty());
        drop(s);
        self.room.add_permits(n);
        open
    }

    /// Takes no more writes; the writer ends once it has done those queued.
    pub(super) fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_one();
    }

    /// The writer is gone (a panic): the writes still queued are dropped,
    /// so their callers learn it (`StoreError::Closed`) instead of waiting.
    pub(super) fn abandon(&self) {
        let ops = {
            let mut s = self.state.lock().unwrap();
            s.closed = true;
            std::mem::take(&mut s.ops)
        };
        self.room.close();
        drop(ops);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::txn::Grows;

    fn op() -> Op {
        Op {
            grows: Grows::No,
            durable: true,
            apply: Box::new(|_| (true, Box::new(|_| {}))),
        }
    }

    fn push(q: &Queue) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(q.push(op())).is_ok());
    }

    #[test]
    fn the_writer_wakes_when_the_writes_it_waits_for_are_queued() {
        let q = Arc::new(Queue::new());
        let pusher = {
            let q = q.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(20));
                    push(&q);
                }
            })
        };
        // Waits for three, not for the deadline.
        let started = Instant::now();
        let mut batch = Vec::new();
        assert!(q.take(&mut batch, 3, Some(started + Duration::from_secs(10)), 512));
        assert_eq!(batch.len(), 3);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        pusher.join().unwrap();

        // Fewer than it wants: what there is, at the deadline.
        push(&q);
        let (at, mut batch) = (Instant::now(), Vec::new());
        assert!(q.take(&mut batch, 8, Some(at + Duration::from_millis(50)), 512));
        assert_eq!(batch.len(), 1);
        assert!(at.elapsed() >= Duration::from_millis(50));

        // At most `max` in a batch; the rest stays for the next.
        for _ in 0..5 {
            push(&q);
        }
        let mut batch = Vec::new();
        assert!(q.take(&mut batch, 1, None, 2));
        assert_eq!(batch.len(), 2);

        // Closed: what is queued is still taken, then the writer is done.
        q.close();
        let mut batch = Vec::new();
        assert!(q.take(&mut batch, 1, None, 512));
        assert_eq!(batch.len(), 3);
        assert!(!q.take(&mut Vec::new(), 1, None, 512));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(q.push(op())).is_err(), "a closed queue takes no write");
    }
}
