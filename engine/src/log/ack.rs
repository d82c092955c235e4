//! One acknowledgement per batch for records whose callers wait for the commit ([`super::LogWriter::append_acked`]).
//!
//! Such records are numbered in queue order (so each batch holds a contiguous range of numbers). After a batch the
//! writer moves one shared watermark past its numbers (noting the range with the error when the commit failed) and
//! wakes ONE waiter of the batch. That waiter, running on the caller's runtime, wakes every other waiter the watermark
//! has passed (a wake from inside the runtime, cheaper than one from the writer thread), and so does every waiter
//! that finishes or is dropped, so a wake taken by a waiter that went away is handed on. In place of a channel and a
//! wake-up from the writer thread per record. A waiter is answered only once its own record's batch is committed
//! (`Ok`) or has failed (`Err`, the batch's error); if the writer stops with records not committed, `Closed`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::WriteError;

/// How many failed ranges are remembered for waiters not yet polled; an older one is forgotten, and a waiter that
/// finds its number forgotten is answered with an error (fail closed), never with success.
const FAILED_KEPT: usize = 4096;

/// The shared state between the writer and its waiters.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// Every record numbered below this has an outcome.
    resolved: AtomicU64,
    /// The next number to give out, taken under this lock together with the queue's send so that numbers follow
    /// queue order. Apart from `inner`: a send may wait for room in the queue, which the writer makes without it.
    next: Mutex<u64>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Waiters not yet answered, with the number of their record.
    waiters: Vec<(u64, Waker)>,
    /// Numbers `[start, end)` whose batch failed, with the error, oldest first.
    failed: VecDeque<(u64, u64, WriteError)>,
    /// Failed ranges below this number were forgotten (see [`FAILED_KEPT`]).
    forgotten_below: u64,
    /// The writer is gone: numbers at or past `resolved` will never be committed.
    closed: bool,
}

impl Acks {
    /// Runs `send` with the next number; the number is taken only when `send` succeeds. Appends are ordered by this
    /// lock, so the writer sees the numbers in order.
    pub(crate) fn number<E>(&self, send: impl FnOnce(u64) -> Result<(), E>) -> Result<u64, E> {
        let mut next = self.next.lock();
        let n = *next;
        send(n)?;
        *next = n + 1;
        Ok(n)
    }

    /// The writer's answer for the records numbered `[start, end)` (a whole batch): moves the watermark and wakes
    /// one waiter, which hands the wake on.
    pub(crate) fn resolve(&self, start: u64, end: u64, result: Result<(), WriteError>) {
        let mut inner = self.inner.lock();
        if let Err(e) = result {
            inner.failed.push_back((start, end, e));
            if inner.failed.len() > FAILED_KEPT {
                if let Some((_, end, _)) = inner.failed.pop_front() {
                    inner.forgotten_below = end;
                }
            }
        }
        self.resolved.fetch_max(end, Ordering::Release);
        let first = inner.waiters.iter().position(|(n, _)| *n < end);
        let waker = first.map(|i| inner.waiters.swap_remove(i).1);
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The writer has stopped: every waiter not answered yet is answered with [`WriteError::Closed`].
    pub(crate) fn close(&self) {
        let waiters = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            std::mem::take(&mut inner.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// The outcome of record `n`, once it has one.
    fn outcome(&self, inner: &Inner, n: u64) -> Option<Result<(), WriteError>> {
        if n >= self.resolved.load(Ordering::Acquire) {
            return inner.closed.then_some(Err(WriteError::Closed));
        }
        if let Some((_, _, e)) = inner.failed.iter().find(|(s, e, _)| (*s..*e).contains(&n)) {
            return Some(Err(e.clone()));
        }
        if n < inner.forgotten_below {
            // Its range may have been forgotten: it cannot be told apart from a success, so it is not one.
            return Some(Err(WriteError::Closed));
        }
        Some(Ok(()))
    }

    /// Wakes every waiter whose record has an outcome (called from a waiter, on the caller's runtime).
    fn hand_on(&self, inner: &mut Inner) -> Vec<Waker> {
        let resolved = self.resolved.load(Ordering::Acquire);
        let mut woken = Vec::new();
        let mut i = 0;
        while i < inner.waiters.len() {
            if inner.waiters[i].0 < resolved || inner.closed {
                woken.push(inner.waiters.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        woken
    }
}

/// Resolves when the record it was returned for is committed (`Ok`) or its batch failed (`Err`); see
/// [`super::LogWriter::append_acked`]. Dropping it is fine: the record is committed all the same.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Ack {
    acks: Arc<Acks>,
    n: u64,
    done: bool,
}

impl Ack {
    pub(crate) fn new(acks: Arc<Acks>, n: u64) -> Ack {
        Ack {
            acks,
            n,
            done: false,
        }
    }
}

impl Future for Ack {
    type Output = Result<(), WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.done {
            return Poll::Ready(Err(WriteError::Closed));
        }
        let acks = self.acks.clone();
        let n = self.n;
        let mut inner = acks.inner.lock();
        match acks.outcome(&inner, n) {
            Some(result) => {
                if let Some(i) = inner.waiters.iter().position(|(m, _)| *m == n) {
                    inner.waiters.swap_remove(i);
                }
                let woken = acks.hand_on(&mut inner);
                drop(inner);
                self.done = true;
                for w in woken {
                    w.wake();
                }
                Poll::Ready(result)
            }
            None => {
                match inner.waiters.iter_mut().find(|(m, _)| *m == n) {
                    Some((_, w)) => w.clone_from(cx.waker()),
                    None => inner.waiters.push((n, cx.waker().clone())),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // It may hold the wake the writer gave its batch: hand it on.
        let woken = {
            let mut inner = self.acks.inner.lock();
            if let Some(i) = inner.waiters.iter().position(|(m, _)| *m == self.n) {
                inner.waiters.swap_remove(i);
            }
            self.acks.hand_on(&mut inner)
        };
        for w in woken {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::mpsc;
    use std::task::Wake;

    use super::*;
    use crate::log::Fault;

    /// A waker that reports on a channel which waiter it belongs to.
    struct Report(usize, mpsc::Sender<usize>);

    impl Wake for Report {
        fn wake(self: Arc<Self>) {
            let _ = self.1.send(self.0);
        }
    }

    fn numbered(acks: &Arc<Acks>, count: usize) -> Vec<Option<Ack>> {
        (0..count)
            .map(|_| {
                let n = acks.number(|_| Ok::<(), ()>(())).unwrap();
                Some(Ack::new(acks.clone(), n))
            })
            .collect()
    }

    fn poll(ack: &mut Ack, waker: &Waker) -> Poll<Result<(), WriteError>> {
        Pin::new(ack).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn one_wake_per_batch_reaches_every_waiter_even_through_one_that_went_away() {
        let acks = Arc::new(Acks::default());
        let mut waiting = numbered(&acks, 4);
        let (tx, woken) = mpsc::channel();
        let wakers: Vec<Waker> = (0..4)
            .map(|i| Waker::from(Arc::new(Report(i, tx.clone()))))
            .collect();
        for (ack, waker) in waiting.iter_mut().zip(&wakers) {
            assert!(poll(ack.as_mut().unwrap(), waker).is_pending());
        }
        // The first three are one batch: one wake from the writer.
        acks.resolve(0, 3, Ok(()));
        let first = woken.try_recv().unwrap();
        assert!(first < 3);
        assert!(woken.try_recv().is_err(), "one wake per batch");
        // Its waiter goes away unpolled: the other two of the batch are woken, the fourth is not.
        drop(waiting[first].take());
        let mut others: Vec<usize> = woken.try_iter().collect();
        others.sort_unstable();
        assert_eq!(others, (0..3).filter(|i| *i != first).collect::<Vec<_>>());
        for i in others {
            assert!(matches!(
                poll(waiting[i].as_mut().unwrap(), &wakers[i]),
                Poll::Ready(Ok(()))
            ));
        }
        assert!(poll(waiting[3].as_mut().unwrap(), &wakers[3]).is_pending());
        // A failed batch: its waiter gets the error.
        let e: WriteError = Fault::io("commit", "disk full").into();
        acks.resolve(3, 4, Err(e.clone()));
        assert_eq!(woken.try_recv().unwrap(), 3);
        assert!(matches!(
            poll(waiting[3].as_mut().unwrap(), &wakers[3]),
            Poll::Ready(Err(got)) if got == e
        ));
    }

    #[test]
    fn a_closed_writer_answers_the_waiters_it_did_not_resolve() {
        let acks = Arc::new(Acks::default());
        let mut waiting = numbered(&acks, 2);
        let waker = Waker::noop();
        acks.resolve(0, 1, Ok(()));
        acks.close();
        assert!(matches!(
            poll(waiting[0].as_mut().unwrap(), waker),
            Poll::Ready(Ok(()))
        ));
        assert!(matches!(
            poll(waiting[1].as_mut().unwrap(), waker),
            Poll::Ready(Err(WriteError::Closed))
        ));
    }

    #[test]
    fn a_forgotten_failure_is_never_answered_as_a_success() {
        let acks = Arc::new(Acks::default());
        let mut waiting = numbered(&acks, FAILED_KEPT + 2);
        let e: WriteError = Fault::io("commit", "disk full").into();
        for n in 0..(FAILED_KEPT as u64 + 2) {
            // Failed batches of one record each, with a success between none of them.
            acks.resolve(n, n + 1, Err(e.clone()));
        }
        let waker = Waker::noop();
        // The oldest range is forgotten: an error all the same (Closed, not the batch's own).
        assert!(matches!(
            poll(waiting[0].as_mut().unwrap(), waker),
            Poll::Ready(Err(WriteError::Closed))
        ));
        let last = waiting.last_mut().unwrap().as_mut().unwrap();
        assert!(matches!(poll(last, waker), Poll::Ready(Err(got)) if got == e));
    }
}
