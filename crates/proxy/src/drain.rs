//! A listener's drain signal, cheap enough to check on every wake-up of every connection.
//!
//! When a listener goes away (reload or shutdown) its connections first drain: HTTP/1.1 ones
//! close after the response in flight, HTTP/2 ones send GOAWAY; once the drain timeout passes,
//! whatever is left (slow requests, WebSocket and TCP tunnels) is closed. A connection checks
//! the signal each time its task wakes, so the check is one atomic load and a comparison of the
//! task's waker with the one already registered; the lock is taken only to register a waker
//! (once per connection in practice) and to fire the signal. A `tokio::sync::watch` receiver,
//! used before, locks its channel's waiter list on every poll, and all connections of a
//! listener share that list.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// Where a listener's connections are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Serving as usual.
    Serving = 0,
    /// Finish what is in flight and close (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
    Draining = 1,
    /// The drain timeout passed: close now.
    Closing = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Serving,
            1 => Phase::Draining,
            _ => Phase::Closing,
        }
    }
}

#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    /// Guards alive: connections, and tunnels that outlive hyper's connection.
    live: AtomicUsize,
    /// Notified when `live` drops to zero.
    idle: Notify,
    wakers: Mutex<Slots>,
}

/// Registered wakers; a freed slot is reused.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side, owned by a listener's accept loop.
#[derive(Default)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

impl Drain {
    pub(crate) fn new() -> Drain {
        Drain::default()
    }

    /// Counts one more user (a connection or a tunnel) until the guard drops.
    pub(crate) fn guard(&self) -> Guard {
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        Guard { shared: self.shared.clone() }
    }

    /// Moves every connection to `phase` (never backwards) and wakes them.
    pub(crate) fn set(&self, phase: Phase) {
        let previous = self.shared.phase.fetch_max(phase as u8, Ordering::Release);
        if previous >= phase as u8 {
            return;
        }
        // A waker registered after this lock is taken re-reads the phase (see `Signal::poll`).
        let wakers: Vec<Waker> = self.shared.slots().wakers.iter().flatten().cloned().collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once no guard is left.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.shared.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    #[cfg(test)]
    fn registered(&self) -> usize {
        self.shared.slots().wakers.iter().flatten().count()
    }
}

/// Keeps a drain waiting while it lives.
pub(crate) struct Guard {
    shared: Arc<Shared>,
}

impl Guard {
    /// A signal that reports the phases after the current one to one task.
    pub(crate) fn signal(&self) -> Signal {
        Signal { shared: self.shared.clone(), seen: Phase::Serving, slot: None }
    }

    /// Resolves when the drain timeout passes (the phase turns `Closing`).
    pub(crate) async fn closing(&self) {
        let mut signal = self.signal();
        while signal.changed().await != Phase::Closing {}
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.shared.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

/// One task's view of the phase: `poll_changed` is ready once per phase it has not seen.
pub(crate) struct Signal {
    shared: Arc<Shared>,
    seen: Phase,
    /// The registered slot and a copy of its waker, compared without the lock.
    slot: Option<(usize, Waker)>,
}

impl Signal {
    /// Ready with the new phase when it moved on since the last time this returned; otherwise
    /// the task is woken when it does.
    pub(crate) fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Phase> {
        if let Some(p) = self.moved() {
            return Poll::Ready(p);
        }
        if let Some((_, w)) = &self.slot
            && w.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        self.register(cx.waker());
        // `Drain::set` stores the phase before it takes the lock `register` took: either it
        // saw this waker, or the phase is visible here.
        match self.moved() {
            Some(p) => Poll::Ready(p),
            None => Poll::Pending,
        }
    }

    /// Resolves with the next phase this signal has not reported.
    pub(crate) fn changed(&mut self) -> impl Future<Output = Phase> + '_ {
        std::future::poll_fn(move |cx| self.poll_changed(cx))
    }

    fn moved(&mut self) -> Option<Phase> {
        let now = Phase::from_u8(self.shared.phase.load(Ordering::Acquire));
        (now > self.seen).then(|| {
            self.seen = now;
            now
        })
    }

    fn register(&mut self, waker: &Waker) {
        let mut slots = self.shared.slots();
        let index = match &self.slot {
            Some((i, _)) => *i,
            None => match slots.free.pop() {
                Some(i) => i,
                None => {
                    slots.wakers.push(None);
                    slots.wakers.len() - 1
                }
            },
        };
        slots.wakers[index] = Some(waker.clone());
        drop(slots);
        self.slot = Some((index, waker.clone()));
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        if let Some((i, _)) = self.slot.take() {
            let mut slots = self.shared.slots();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

/// Runs `conn` (hyper's connection future) under `signal`: asks it to shut down gracefully
/// (through `graceful`) when draining starts, and drops it, closing the socket, at `Closing`.
/// Returns `None` when it was closed that way.
pub(crate) async fn serve<C, O>(mut conn: Pin<&mut C>, mut signal: Signal, graceful: impl Fn(Pin<&mut C>)) -> Option<O>
where
    C: Future<Output = O>,
{
    std::future::poll_fn(|cx| {
        match signal.poll_changed(cx) {
            Poll::Ready(Phase::Closing) => return Poll::Ready(None),
            Poll::Ready(_) => {
                graceful(conn.as_mut());
                // The phase may move on to `Closing` later: keep the waker registered.
                if let Poll::Ready(Phase::Closing) = signal.poll_changed(cx) {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending => {}
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(AtomicBool::new(false)));
        (f.clone(), Waker::from(f))
    }

    #[test]
    fn a_signal_reports_each_phase_once_and_wakes_its_task() {
        let drain = Drain::new();
        let guard = drain.guard();
        let mut signal = guard.signal();
        let (woken, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert_eq!(signal.poll_changed(&mut cx), Poll::Pending);
        assert_eq!(signal.poll_changed(&mut cx), Poll::Pending);
        assert_eq!(drain.registered(), 1, "the same waker is registered once");
        drain.set(Phase::Draining);
        assert!(woken.0.load(Ordering::SeqCst));
        assert_eq!(signal.poll_changed(&mut cx), Poll::Ready(Phase::Draining));
        assert_eq!(signal.poll_changed(&mut cx), Poll::Pending);
        drain.set(Phase::Serving); // never backwards
        assert_eq!(signal.poll_changed(&mut cx), Poll::Pending);
        drain.set(Phase::Closing);
        assert_eq!(signal.poll_changed(&mut cx), Poll::Ready(Phase::Closing));
        drop(signal);
        assert_eq!(drain.registered(), 0);
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let drain = Drain::new();
        let guard = drain.guard();
        let mut signal = guard.signal();
        let (first, w1) = waker();
        let (second, w2) = waker();
        assert_eq!(signal.poll_changed(&mut Context::from_waker(&w1)), Poll::Pending);
        assert_eq!(signal.poll_changed(&mut Context::from_waker(&w2)), Poll::Pending);
        assert_eq!(drain.registered(), 1);
        drain.set(Phase::Closing);
        assert!(!first.0.load(Ordering::SeqCst));
        assert!(second.0.load(Ordering::SeqCst));
    }

    #[test]
    fn a_signal_made_after_the_drain_started_reports_it() {
        let drain = Drain::new();
        let guard = drain.guard();
        drain.set(Phase::Draining);
        let mut signal = guard.signal();
        let (_, w) = waker();
        assert_eq!(signal.poll_changed(&mut Context::from_waker(&w)), Poll::Ready(Phase::Draining));
    }

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let drain = Drain::new();
        drain.idle().await; // nothing to wait for
        let a = drain.guard();
        let b = drain.guard();
        let waiting = tokio::spawn(async move {
            drain.idle().await;
        });
        tokio::task::yield_now().await;
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("idle resolves once the last guard drops")
            .expect("task");
    }

    #[tokio::test]
    async fn serve_asks_for_a_graceful_end_then_closes() {
        let drain = Arc::new(Drain::new());
        let guard = drain.guard();
        let asked = Arc::new(AtomicBool::new(false));
        let asked2 = asked.clone();
        let task = tokio::spawn(async move {
            let conn = std::future::pending::<()>();
            let mut conn = std::pin::pin!(conn);
            serve(conn.as_mut(), guard.signal(), move |_| asked2.store(true, Ordering::SeqCst)).await
        });
        tokio::task::yield_now().await;
        drain.set(Phase::Draining);
        let d = drain.clone();
        tokio::time::timeout(std::time::Duration::from_secs(5), async move {
            while !asked.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            d.set(Phase::Closing);
        })
        .await
        .expect("graceful shutdown asked for");
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("closed").expect("task");
        assert_eq!(out, None);
        tokio::time::timeout(std::time::Duration::from_secs(5), drain.idle())
            .await
            .expect("guard dropped with the task");
    }
}
