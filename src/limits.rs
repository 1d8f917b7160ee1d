//! Sessions per user and per client address, counted across every core (the one
//! piece of session state that must be shared: a client's connections land on
//! any core). Taken once per authenticated connection, not on the data path.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use crate::stats::Limit;

/// Live sessions by user and by client address, with their caps.
pub struct SessionLimits {
    per_user: usize,
    per_address: usize,
    by_user: DashMap<String, usize>,
    by_address: DashMap<IpAddr, usize>,
}

/// One admitted session, counted until dropped.
pub struct SessionSlot {
    limits: Arc<SessionLimits>,
    user: String,
    address: IpAddr,
}

impl SessionLimits {
    /// Caps of `per_user` sessions per user and `per_address` per client address.
    pub fn new(per_user: usize, per_address: usize) -> Arc<SessionLimits> {
        Arc::new(SessionLimits {
            per_user,
            per_address,
            by_user: DashMap::new(),
            by_address: DashMap::new(),
        })
    }

    /// Counts a new session of `user` from `address`, or says which cap it would pass.
    pub fn admit(self: &Arc<Self>, user: &str, address: IpAddr) -> Result<SessionSlot, Limit> {
        if !take(&self.by_address, address, self.per_address) {
            return Err(Limit::SessionsPerAddress);
        }
        if !take(&self.by_user, user.to_owned(), self.per_user) {
            give(&self.by_address, &address);
            return Err(Limit::SessionsPerUser);
        }
        Ok(SessionSlot {
            limits: self.clone(),
            user: user.to_owned(),
            address,
        })
    }

    /// Sessions `user` has open now.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, |n| *n)
    }
}

fn take<K: Eq + Hash>(counts: &DashMap<K, usize>, key: K, cap: usize) -> bool {
    let mut count = counts.entry(key).or_insert(0);
    if *count >= cap {
        return false;
    }
    *count += 1;
    true
}

fn give<K: Eq + Hash>(counts: &DashMap<K, usize>, key: &K) {
    // Entries that reach zero are removed, so the maps hold only live clients.
    counts.remove_if_mut(key, |_, count| {
        *count -= 1;
        *count == 0
    });
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        give(&self.limits.by_user, &self.user);
        give(&self.limits.by_address, &self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_user_and_address_and_slots_give_back() {
        let limits = SessionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit("alice", a).unwrap();
        let _second = limits.admit("alice", a).unwrap();
        assert_eq!(
            limits.admit("bob", a).err(),
            Some(Limit::SessionsPerAddress)
        );
        let _third = limits.admit("alice", b).unwrap();
        assert_eq!(limits.admit("alice", b).err(), Some(Limit::SessionsPerUser));
        assert_eq!(limits.sessions_of("alice"), 3);
        drop(first);
        assert_eq!(limits.sessions_of("alice"), 2);
        assert!(
            limits.admit("bob", a).is_ok(),
            "a freed slot is usable again"
        );
        assert!(
            limits.by_user.get("bob").is_none(),
            "empty entries are removed"
        );
    }
}
