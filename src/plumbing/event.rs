//! A one-shot, executor-local event: set once, awaited by any number of tasks;
//! and [`Signal`], a re-armable wake-up for one waiting task.
//!
//! Waiters live in a slab and a waiter leaves it when its future is dropped, so a
//! long-lived event (a session's "closed") that thousands of short-lived tasks wait
//! on in turn holds only the waiters that are still waiting.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// Set once; every waiter (present and future) then completes.
#[derive(Default)]
pub struct Event {
    set: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Event {
    /// Sets the event and wakes every waiter.
    pub fn set(&self) {
        if !self.set.replace(true) {
            for waker in self.waiters.take().drain() {
                waker.wake();
            }
        }
    }

    /// Whether the event has been set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Completes once the event is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            event: self,
            key: None,
        }
    }

    /// Tasks waiting now.
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// A wake-up for one task that waits again and again: [`Signal::notify`] wakes
/// the waiting task, or makes the next [`Signal::wait`] return at once.
#[derive(Default)]
pub struct Signal {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Wakes the waiting task (or the next one to wait).
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Completes at the first notification since the last wait completed.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The future of [`Event::wait`].
pub struct Wait<'a> {
    event: &'a Event,
    key: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.set.get() {
            self.key = None;
            return Poll::Ready(());
        }
        let mut waiters = self.event.waiters.borrow_mut();
        match self.key {
            Some(key) => {
                if let Some(waker) = waiters.get_mut(key) {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                }
            }
            None => {
                let key = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut waiters = self.event.waiters.borrow_mut();
            if waiters.contains(key) {
                waiters.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use std::pin::pin;

    #[test]
    fn waiters_complete_when_set() {
        let event = Event::default();
        block_on(async {
            let mut a = pin!(event.wait());
            let mut b = pin!(event.wait());
            assert!(poll_once(a.as_mut()).await.is_none());
            assert!(poll_once(b.as_mut()).await.is_none());
            assert_eq!(event.waiters(), 2);
            event.set();
            assert!(poll_once(a.as_mut()).await.is_some());
            assert!(poll_once(b.as_mut()).await.is_some());
            event.wait().await;
        });
    }

    #[test]
    fn a_signal_wakes_once_per_notification() {
        let signal = Signal::default();
        block_on(async {
            let mut wait = pin!(signal.wait());
            assert!(poll_once(wait.as_mut()).await.is_none());
            signal.notify();
            assert!(poll_once(wait.as_mut()).await.is_some());
            signal.notify();
            signal.notify();
            signal.wait().await;
            let mut again = pin!(signal.wait());
            assert!(
                poll_once(again.as_mut()).await.is_none(),
                "notifications do not pile up"
            );
        });
    }

    #[test]
    fn dropped_waiters_leave() {
        let event = Event::default();
        block_on(async {
            for _ in 0..1000 {
                let mut wait = pin!(event.wait());
                assert!(poll_once(wait.as_mut()).await.is_none());
            }
        });
        assert_eq!(event.waiters(), 0, "no waker kept for finished waits");
    }
}
