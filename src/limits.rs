//! What clients hold, counted across every core (the one piece of connection
//! state that must be shared: a client's connections land on any core): sessions
//! per user and per client address, connections not yet authenticated (or
//! handed to the fallback) per client subnet and in total, and the wrong
//! passwords each client address sent. Taken once per connection, not on the
//! data path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::stats::Limit;

/// Live sessions by user and by client address, with their caps, and the
/// outbound connections each user's streams hold, for their fair share.
pub struct SessionLimits {
    per_user: usize,
    per_address: usize,
    by_user: DashMap<String, usize>,
    by_address: DashMap<IpAddr, usize>,
    outbound_by_user: DashMap<String, usize>,
    /// Bytes each user's sessions hold for their targets, over all cores.
    held_by_user: DashMap<String, Arc<AtomicUsize>>,
    /// The client addresses each user is online from here, with sessions per address.
    devices: DashMap<String, HashMap<IpAddr, usize>>,
    /// What the panel says of each device-limited user over the fleet.
    fleet: DashMap<String, FleetDevices>,
}

/// A user's devices over the fleet, as the panel last said (node mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetDevices {
    /// Distinct addresses online over every node (the panel's `alivelist`),
    /// this node's reported ones included.
    pub online: usize,
    /// This node's addresses the panel was told of before that count.
    pub reported: HashSet<IpAddr>,
}

/// One outbound connection counted against its user's share until dropped.
pub struct OutboundShare {
    limits: Arc<SessionLimits>,
    user: String,
}

/// One admitted session, counted until dropped.
pub struct SessionSlot {
    limits: Arc<SessionLimits>,
    user: String,
    address: IpAddr,
    held: Arc<AtomicUsize>,
}

impl SessionLimits {
    /// Caps of `per_user` sessions per user and `per_address` per client address.
    pub fn new(per_user: usize, per_address: usize) -> Arc<SessionLimits> {
        Arc::new(SessionLimits {
            per_user,
            per_address,
            by_user: DashMap::new(),
            by_address: DashMap::new(),
            outbound_by_user: DashMap::new(),
            held_by_user: DashMap::new(),
            devices: DashMap::new(),
            fleet: DashMap::new(),
        })
    }

    /// The most outbound connections (of `cap` server-wide) one user may hold:
    /// an equal share of the users with sessions open, and a lone user leaves an
    /// eighth for whoever comes next.
    pub fn outbound_share(&self, cap: usize) -> usize {
        match self.by_user.len() {
            0 | 1 => cap - cap / 8,
            users => cap / users,
        }
        .max(1)
    }

    /// Counts one more outbound connection for `user`, or refuses it when the
    /// user holds its [`SessionLimits::outbound_share`] of `cap` already. (A
    /// share as large as the cap is left to the cap, whose refusal says so.)
    pub fn take_outbound(self: &Arc<Self>, user: &str, cap: usize) -> Result<OutboundShare, Limit> {
        let share = match self.outbound_share(cap) {
            share if share >= cap => usize::MAX,
            share => share,
        };
        if !take(&self.outbound_by_user, user.to_owned(), share) {
            return Err(Limit::OutboundShare);
        }
        Ok(OutboundShare {
            limits: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Outbound connections `user`'s streams hold now.
    pub fn outbound_of(&self, user: &str) -> usize {
        self.outbound_by_user.get(user).map_or(0, |n| *n)
    }

    /// Counts a new session of `user` from `address`, or says which cap it would
    /// pass. With a `device_limit`, a session from an address the user is not
    /// online from here is refused once the user's devices (the fleet's, and
    /// this node's not yet reported) reach it; one from an address already online
    /// never is.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        address: IpAddr,
        device_limit: Option<u32>,
    ) -> Result<SessionSlot, Limit> {
        if !take(&self.by_address, address, self.per_address) {
            return Err(Limit::SessionsPerAddress);
        }
        if !take(&self.by_user, user.to_owned(), self.per_user) {
            give(&self.by_address, &address);
            return Err(Limit::SessionsPerUser);
        }
        if !self.take_device(user, address, device_limit) {
            give(&self.by_user, &user.to_owned());
            give(&self.by_address, &address);
            return Err(Limit::Devices);
        }
        let held = self
            .held_by_user
            .entry(user.to_owned())
            .or_default()
            .clone();
        Ok(SessionSlot {
            limits: self.clone(),
            user: user.to_owned(),
            address,
            held,
        })
    }

    /// Sessions `user` has open now.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, |n| *n)
    }

    fn take_device(&self, user: &str, address: IpAddr, limit: Option<u32>) -> bool {
        let mut devices = self.devices.entry(user.to_owned()).or_default();
        if let Some(sessions) = devices.get_mut(&address) {
            *sessions += 1;
            return true;
        }
        if let Some(limit) = limit {
            let fleet = self.fleet.get(user).map(|f| f.clone()).unwrap_or_default();
            let unreported = devices
                .keys()
                .filter(|ip| !fleet.reported.contains(ip))
                .count();
            let new = usize::from(!fleet.reported.contains(&address));
            if fleet.online + unreported + new > limit as usize {
                drop(devices);
                self.devices.remove_if(user, |_, d| d.is_empty());
                return false;
            }
        }
        devices.insert(address, 1);
        true
    }

    fn give_device(&self, user: &str, address: &IpAddr) {
        if let Some(mut devices) = self.devices.get_mut(user) {
            if let Some(sessions) = devices.get_mut(address) {
                *sessions -= 1;
                if *sessions == 0 {
                    devices.remove(address);
                }
            }
        }
        self.devices.remove_if(user, |_, d| d.is_empty());
    }

    /// The client addresses each user is online from here now, sorted.
    pub fn online_addresses(&self) -> BTreeMap<String, Vec<IpAddr>> {
        self.devices
            .iter()
            .map(|entry| {
                let mut ips: Vec<IpAddr> = entry.value().keys().copied().collect();
                ips.sort_unstable();
                (entry.key().clone(), ips)
            })
            .collect()
    }

    /// Replaces what the panel says of the users' devices over the fleet.
    pub fn set_fleet(&self, fleet: HashMap<String, FleetDevices>) {
        self.fleet.retain(|user, _| fleet.contains_key(user));
        for (user, devices) in fleet {
            self.fleet.insert(user, devices);
        }
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

/// Connections accepted and not yet authenticated (TLS handshake and preamble),
/// or handed to the fallback, by client subnet and in total, with their caps;
/// and the wrong passwords sent per client address.
pub struct PendingLimits {
    total_cap: usize,
    per_subnet: usize,
    total: AtomicUsize,
    by_subnet: DashMap<IpAddr, usize>,
    /// Wrong passwords per client address.
    pub guesses: GuessLimits,
}

/// When wrong passwords block a client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessRules {
    /// Wrong passwords within `window` that block the address; 0: never blocked.
    pub limit: u32,
    /// The window wrong passwords are counted in.
    pub window: Duration,
    /// How long the first block lasts; a block within [`MAX_GUESS_BLOCK`] of the
    /// last one lasts twice as long as it, up to that.
    pub block: Duration,
}

/// The longest block, and how long a blocked address is remembered.
pub const MAX_GUESS_BLOCK: Duration = Duration::from_secs(3600);
/// Addresses tracked before the ones with nothing left to remember are dropped.
const GUESS_PRUNE_AT: usize = 4096;
/// Addresses tracked at most: past it, new ones are not (it fails open).
const GUESS_TRACKED_MAX: usize = 65_536;

impl GuessRules {
    /// Never blocks.
    pub const OFF: GuessRules = GuessRules {
        limit: 0,
        window: Duration::from_secs(60),
        block: Duration::from_secs(60),
    };
}

/// Wrong passwords per client address (an IPv6 client by its /64), over every
/// core: past [`GuessRules::limit`] within the window, further connections from
/// the address are refused without their password being checked, for a block
/// that grows each time. An address that never passed the limit is never
/// refused. Looked up once per connection, and only while some address is
/// tracked.
pub struct GuessLimits {
    rules: GuessRules,
    by_address: DashMap<IpAddr, Guesses>,
    tracked: AtomicUsize,
    prune_at: AtomicUsize,
}

#[derive(Clone, Copy, Debug)]
struct Guesses {
    window_start: Instant,
    wrong: u32,
    blocked_until: Option<Instant>,
    /// The last block's length and start.
    last_block: Option<(Duration, Instant)>,
}

impl Guesses {
    /// Whether there is nothing left to remember at `now`.
    fn forgotten(&self, rules: &GuessRules, now: Instant) -> bool {
        let window_over = now.saturating_duration_since(self.window_start) >= rules.window;
        let block_over = self.last_block.is_none_or(|(length, start)| {
            now.saturating_duration_since(start) >= length + MAX_GUESS_BLOCK
        });
        window_over && block_over
    }
}

/// The key a client address is counted under: itself for IPv4 (IPv4-mapped
/// IPv6 included), its /64 for IPv6.
fn guess_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => subnet(address),
        },
        v4 => v4,
    }
}

impl GuessLimits {
    /// Tracks wrong passwords by `rules`.
    pub fn new(rules: GuessRules) -> GuessLimits {
        GuessLimits {
            rules,
            by_address: DashMap::new(),
            tracked: AtomicUsize::new(0),
            prune_at: AtomicUsize::new(GUESS_PRUNE_AT),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> GuessRules {
        self.rules
    }

    /// Whether connections from `address` are refused at `now` without their
    /// password being checked.
    pub fn blocked(&self, address: IpAddr, now: Instant) -> bool {
        if self.rules.limit == 0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.by_address
            .get(&guess_key(address))
            .and_then(|guesses| guesses.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a wrong password from `address` at `now`; the block it starts, if
    /// it is the one that passes the limit.
    pub fn wrong_password(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        if self.rules.limit == 0 {
            return None;
        }
        let key = guess_key(address);
        if !self.by_address.contains_key(&key) && !self.make_room(now) {
            return None;
        }
        let mut entry = self.by_address.entry(key).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            Guesses {
                window_start: now,
                wrong: 0,
                blocked_until: None,
                last_block: None,
            }
        });
        let guesses = entry.value_mut();
        if now.saturating_duration_since(guesses.window_start) >= self.rules.window {
            guesses.window_start = now;
            guesses.wrong = 0;
        }
        guesses.wrong += 1;
        if guesses.wrong < self.rules.limit {
            return None;
        }
        let block = match guesses.last_block {
            Some((length, start))
                if now.saturating_duration_since(start) < length + MAX_GUESS_BLOCK =>
            {
                (length * 2).min(MAX_GUESS_BLOCK)
            }
            _ => self.rules.block,
        };
        guesses.blocked_until = Some(now + block);
        guesses.last_block = Some((block, now));
        guesses.wrong = 0;
        guesses.window_start = now;
        Some(block)
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Room for one more address: past the pruning mark, the addresses with
    /// nothing left to remember are dropped (the mark then doubles what is left,
    /// so pruning stays rare under a scan from many addresses); false when the
    /// table is full anyway.
    fn make_room(&self, now: Instant) -> bool {
        if self.tracked.load(Ordering::Relaxed) < self.prune_at.load(Ordering::Relaxed) {
            return true;
        }
        self.by_address.retain(|_, guesses| {
            let keep = !guesses.forgotten(&self.rules, now);
            if !keep {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        let left = self.tracked.load(Ordering::Relaxed);
        self.prune_at
            .store((left * 2).max(GUESS_PRUNE_AT), Ordering::Relaxed);
        left < GUESS_TRACKED_MAX
    }
}

/// One pending connection, counted until dropped.
pub struct PendingSlot {
    limits: Arc<PendingLimits>,
    subnet: IpAddr,
}

/// The subnet a client address is counted in: its /24 for IPv4 (IPv4-mapped IPv6
/// included), its /64 for IPv6, as one address with the host bits cleared.
pub fn subnet(address: IpAddr) -> IpAddr {
    let v4 = match address {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    match (v4, address) {
        (Some(v4), _) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        (None, IpAddr::V6(v6)) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        (None, IpAddr::V4(_)) => unreachable!("an IPv4 address has its IPv4 form"),
    }
}

impl PendingLimits {
    /// Caps of `total` pending connections and `per_subnet` from one subnet,
    /// and wrong passwords counted by `guessing`.
    pub fn new(total: usize, per_subnet: usize, guessing: GuessRules) -> Arc<PendingLimits> {
        Arc::new(PendingLimits {
            total_cap: total,
            per_subnet,
            total: AtomicUsize::new(0),
            by_subnet: DashMap::new(),
            guesses: GuessLimits::new(guessing),
        })
    }

    /// Counts a new connection from `address`, or says which cap it would pass.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<PendingSlot, Limit> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.total_cap {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::Pending);
        }
        let subnet = subnet(address);
        if !take(&self.by_subnet, subnet, self.per_subnet) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::PendingPerSubnet);
        }
        Ok(PendingSlot {
            limits: self.clone(),
            subnet,
        })
    }

    /// Pending connections now, over all cores.
    pub fn pending(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        give(&self.limits.by_subnet, &self.subnet);
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for OutboundShare {
    fn drop(&mut self) {
        give(&self.limits.outbound_by_user, &self.user);
    }
}

impl SessionSlot {
    /// What all sessions of this slot's user hold for their targets, over all
    /// cores: each session adds and takes back its own part.
    pub fn user_held(&self) -> Arc<AtomicUsize> {
        self.held.clone()
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        give(&self.limits.by_user, &self.user);
        give(&self.limits.by_address, &self.address);
        self.limits.give_device(&self.user, &self.address);
        // The map's and this slot's: no other session of the user holds it.
        self.limits
            .held_by_user
            .remove_if(&self.user, |_, held| Arc::strong_count(held) <= 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_holds_at_most_its_share_of_outbound_connections() {
        let limits = SessionLimits::new(10, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let _alice = limits.admit("alice", a, None).unwrap();
        let held: Vec<_> = (0..7)
            .map(|_| limits.take_outbound("alice", 8).unwrap())
            .collect();
        assert_eq!(
            limits.take_outbound("alice", 8).err(),
            Some(Limit::OutboundShare),
            "alone, a user leaves an eighth"
        );
        let _bob = limits.admit("bob", a, None).unwrap();
        let bobs: Vec<_> = (0..4)
            .map(|_| limits.take_outbound("bob", 8).unwrap())
            .collect();
        assert_eq!(
            limits.take_outbound("bob", 8).err(),
            Some(Limit::OutboundShare)
        );
        drop(held);
        assert_eq!(limits.outbound_of("alice"), 0);
        let again: Vec<_> = (0..4)
            .map(|_| limits.take_outbound("alice", 8).unwrap())
            .collect();
        assert_eq!(
            limits.take_outbound("alice", 8).err(),
            Some(Limit::OutboundShare),
            "with two users, half each"
        );
        assert_eq!((again.len(), bobs.len()), (4, 4));
    }

    #[test]
    fn devices_are_counted_over_the_fleet_and_known_addresses_always_pass() {
        let limits = SessionLimits::new(100, 100);
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let first = limits.admit("u", ip(1), Some(2)).unwrap();
        let again = limits.admit("u", ip(1), Some(2)).unwrap();
        let _second = limits.admit("u", ip(2), Some(2)).unwrap();
        assert_eq!(
            limits.admit("u", ip(3), Some(2)).err(),
            Some(Limit::Devices)
        );
        assert!(
            limits.admit("u", ip(2), Some(2)).is_ok(),
            "an address already online is never refused"
        );
        assert!(limits.admit("other", ip(3), Some(2)).is_ok());
        drop((first, again));
        let third = limits.admit("u", ip(3), Some(2));
        assert!(third.is_ok(), "a device left");
        assert_eq!(limits.online_addresses()["u"], vec![ip(2), ip(3)]);
        // The panel counts 2 devices of "v" elsewhere: none more fits a limit of 2,
        // but an address it was told of (counted in those 2) comes back.
        let fleet = FleetDevices {
            online: 2,
            reported: HashSet::from([ip(9)]),
        };
        limits.set_fleet(HashMap::from([("v".to_owned(), fleet)]));
        assert_eq!(
            limits.admit("v", ip(8), Some(2)).err(),
            Some(Limit::Devices)
        );
        assert!(limits.admit("v", ip(9), Some(2)).is_ok());
        assert!(limits.admit("v", ip(8), None).is_ok(), "no limit, no count");
        assert!(limits.by_user.get("w").is_none());
    }

    #[test]
    fn wrong_passwords_block_an_address_for_longer_each_time() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let rules = GuessRules {
            limit: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(10),
        };
        let guesses = GuessLimits::new(rules);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let guesser = ip("192.0.2.7");
        assert!(!guesses.blocked(guesser, at(0)));
        assert_eq!(guesses.wrong_password(guesser, at(0)), None);
        assert_eq!(guesses.wrong_password(guesser, at(1)), None);
        assert_eq!(
            guesses.wrong_password(guesser, at(2)),
            Some(Duration::from_secs(10))
        );
        assert!(guesses.blocked(guesser, at(3)));
        assert!(
            !guesses.blocked(ip("192.0.2.8"), at(3)),
            "its neighbour is not"
        );
        assert!(!guesses.blocked(guesser, at(12)), "the block ended");
        for secs in 12..14 {
            assert_eq!(guesses.wrong_password(guesser, at(secs)), None);
        }
        assert_eq!(
            guesses.wrong_password(guesser, at(14)),
            Some(Duration::from_secs(20)),
            "blocked again soon after: twice as long"
        );
        // Wrong passwords spread wider than the window never add up.
        let slow = ip("192.0.2.9");
        for minute in 0..10 {
            assert_eq!(guesses.wrong_password(slow, at(minute * 61)), None);
        }
        // An IPv6 client counts by its /64.
        let v6 = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, n));
        for n in 1..=3 {
            guesses.wrong_password(v6(n), at(100));
        }
        assert!(guesses.blocked(v6(99), at(101)));
        assert_eq!(guesses.tracked(), 3);
        let off = GuessLimits::new(GuessRules::OFF);
        for _ in 0..100 {
            assert_eq!(off.wrong_password(guesser, at(0)), None);
        }
        assert!(!off.blocked(guesser, at(0)));
    }

    #[test]
    fn forgotten_addresses_are_pruned() {
        let rules = GuessRules {
            limit: 2,
            window: Duration::from_secs(1),
            block: Duration::from_secs(1),
        };
        let guesses = GuessLimits::new(rules);
        let start = Instant::now();
        for n in 0..GUESS_PRUNE_AT as u32 {
            guesses.wrong_password(IpAddr::V4(n.into()), start);
        }
        assert_eq!(guesses.tracked(), GUESS_PRUNE_AT);
        let later = start + Duration::from_secs(2);
        guesses.wrong_password(IpAddr::V4(u32::MAX.into()), later);
        assert_eq!(
            guesses.tracked(),
            1,
            "the old ones had nothing left to remember"
        );
    }

    #[test]
    fn pending_connections_are_capped_per_subnet_and_in_total() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(subnet(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(subnet(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(subnet(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        let limits = PendingLimits::new(3, 2, GuessRules::OFF);
        let first = limits.admit(ip("10.0.0.1")).unwrap();
        let _second = limits.admit(ip("10.0.0.200")).unwrap();
        assert_eq!(
            limits.admit(ip("10.0.0.3")).err(),
            Some(Limit::PendingPerSubnet),
            "the whole /24 counts as one client"
        );
        let _third = limits.admit(ip("10.0.1.1")).unwrap();
        assert_eq!(limits.admit(ip("10.0.2.1")).err(), Some(Limit::Pending));
        assert_eq!(limits.pending(), 3);
        drop(first);
        assert_eq!(limits.pending(), 2);
        assert!(
            limits.admit(ip("10.0.0.3")).is_ok(),
            "a freed slot is usable again"
        );
        assert_eq!(limits.pending(), 2, "the slot was dropped at once");
        assert!(limits.by_subnet.get(&ip("10.0.2.0")).is_none());
    }

    #[test]
    fn caps_per_user_and_address_and_slots_give_back() {
        let limits = SessionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit("alice", a, None).unwrap();
        let _second = limits.admit("alice", a, None).unwrap();
        assert_eq!(
            limits.admit("bob", a, None).err(),
            Some(Limit::SessionsPerAddress)
        );
        let _third = limits.admit("alice", b, None).unwrap();
        assert_eq!(
            limits.admit("alice", b, None).err(),
            Some(Limit::SessionsPerUser)
        );
        assert_eq!(limits.sessions_of("alice"), 3);
        drop(first);
        assert_eq!(limits.sessions_of("alice"), 2);
        assert!(
            limits.admit("bob", a, None).is_ok(),
            "a freed slot is usable again"
        );
        assert!(
            limits.by_user.get("bob").is_none(),
            "empty entries are removed"
        );
    }
}
