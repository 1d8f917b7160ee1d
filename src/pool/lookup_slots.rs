//! Fair shares of a core's name-lookup threads: a blocking lookup takes a
//! thread until the system resolver answers (seconds, for a name that never
//! resolves), so no user may run more than a share of them at once. Lookups past
//! a user's share, or past the threads, wait in order of arrival; a thread that
//! comes free goes to the first waiter whose user is under its share. No I/O and
//! no waking here: the resolver keeps a waker as each waiter's `W`.

use std::collections::{HashMap, VecDeque};

/// A lookup waiting for a thread.
struct Waiter<W> {
    id: u64,
    user: String,
    token: W,
}

/// See the module documentation.
pub struct LookupSlots<W> {
    threads: usize,
    per_user: usize,
    running: usize,
    by_user: HashMap<String, usize>,
    waiting: VecDeque<Waiter<W>>,
    /// Waiters handed a thread that have not noticed yet.
    granted: Vec<u64>,
    next_id: u64,
}

impl<W> LookupSlots<W> {
    /// `threads` lookups at once, `per_user` of them for one user.
    pub fn new(threads: usize, per_user: usize) -> LookupSlots<W> {
        LookupSlots {
            threads: threads.max(1),
            per_user: per_user.clamp(1, threads.max(1)),
            running: 0,
            by_user: HashMap::new(),
            waiting: VecDeque::new(),
            granted: Vec::new(),
            next_id: 0,
        }
    }

    fn may_run(&self, user: &str) -> bool {
        self.running < self.threads && self.by_user.get(user).copied().unwrap_or(0) < self.per_user
    }

    fn start(&mut self, user: &str) {
        self.running += 1;
        *self.by_user.entry(user.to_owned()).or_insert(0) += 1;
    }

    /// A thread for `user` now if one is free and within its share; otherwise
    /// the id it waits under (with `token`, to be woken). (No waiter that may
    /// run is ever left waiting, so one that may run now passes no one.)
    pub fn take(&mut self, user: &str, token: W) -> Result<(), u64> {
        if self.may_run(user) {
            self.start(user);
            return Ok(());
        }
        self.next_id += 1;
        let id = self.next_id;
        self.waiting.push_back(Waiter {
            id,
            user: user.to_owned(),
            token,
        });
        Err(id)
    }

    /// Whether waiter `id` was handed a thread (it then holds it); otherwise
    /// its token is replaced by `token`.
    pub fn poll_granted(&mut self, id: u64, token: W) -> bool {
        if let Some(at) = self.granted.iter().position(|g| *g == id) {
            self.granted.swap_remove(at);
            return true;
        }
        if let Some(waiter) = self.waiting.iter_mut().find(|w| w.id == id) {
            waiter.token = token;
        }
        false
    }

    /// Waiter `id` gave up: it leaves the queue, or hands on the thread it was
    /// granted (returning whom to wake then).
    pub fn cancel(&mut self, id: u64, user: &str) -> Vec<W> {
        if let Some(at) = self.granted.iter().position(|g| *g == id) {
            self.granted.swap_remove(at);
            return self.finish(user);
        }
        self.waiting.retain(|w| w.id != id);
        Vec::new()
    }

    /// A lookup of `user` ended: its thread goes to the next waiters that may
    /// run, whose tokens are returned to be woken.
    pub fn finish(&mut self, user: &str) -> Vec<W> {
        self.running -= 1;
        if let Some(count) = self.by_user.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                self.by_user.remove(user);
            }
        }
        let mut woken = Vec::new();
        while let Some(at) = self.waiting.iter().position(|w| self.may_run(&w.user)) {
            let waiter = self.waiting.remove(at).expect("position is in range");
            self.start(&waiter.user);
            self.granted.push(waiter.id);
            woken.push(waiter.token);
        }
        woken
    }

    /// Lookups running and waiting.
    pub fn load(&self) -> (usize, usize) {
        (self.running, self.waiting.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_take_every_thread() {
        let mut slots = LookupSlots::new(4, 2);
        assert!(slots.take("mallory", 'a').is_ok());
        assert!(slots.take("mallory", 'b').is_ok());
        let waiting = slots.take("mallory", 'c').unwrap_err();
        assert!(!slots.poll_granted(waiting, 'c'));
        // Mallory waits at its share; others still get the free threads.
        assert!(slots.take("alice", 'd').is_ok());
        assert!(slots.take("bob", 'e').is_ok());
        let carol = slots.take("carol", 'f').unwrap_err();
        assert_eq!(slots.load(), (4, 2));
        // A thread freed by alice goes to the first waiter that may run: carol,
        // not mallory, who is still at its share.
        assert_eq!(slots.finish("alice"), ['f']);
        assert!(slots.poll_granted(carol, 'f'));
        assert_eq!(slots.finish("mallory"), ['c'], "mallory's own thread");
        assert!(slots.poll_granted(waiting, 'c'));
        assert_eq!(slots.load(), (4, 0));
    }

    #[test]
    fn a_waiter_that_gives_up_hands_on_its_thread() {
        let mut slots = LookupSlots::new(1, 1);
        slots.take("a", 1).unwrap();
        let b = slots.take("b", 2).unwrap_err();
        let c = slots.take("c", 3).unwrap_err();
        assert_eq!(slots.finish("a"), [2], "b is granted the thread");
        assert_eq!(slots.cancel(b, "b"), [3], "b gave up: c gets it");
        assert!(slots.poll_granted(c, 3));
        let d = slots.take("d", 4).unwrap_err();
        assert!(
            slots.cancel(d, "d").is_empty(),
            "a plain waiter just leaves"
        );
        assert!(slots.finish("c").is_empty());
        assert_eq!(slots.load(), (0, 0));
        assert!(slots.take("e", 5).is_ok());
    }
}
