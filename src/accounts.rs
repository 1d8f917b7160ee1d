//! Who may log in and what each user may use: the [`Accounts`] every core checks
//! a password hash against, each [`Account`] shared by that user's sessions on
//! every core (its speed limit, its device limit, whether it was taken away).
//!
//! A new list of users (SIGHUP, or the panel's) becomes a new [`Accounts`] by
//! [`Accounts::succeeded_by`]: a user whose name and password are unchanged keeps
//! its account (its sessions go on, its limits change in place), and every
//! account not carried over is revoked, which ends its open sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::proto::auth::PasswordHash;
use crate::speed_limit::SpeedLimit;

/// One user as a list names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSpec {
    /// Shown in logs and stats; the panel's user id in node mode.
    pub name: String,
    /// What the client hashes.
    pub password: String,
    /// Bytes per second each way over all the user's sessions; 0: none.
    pub speed_limit: u64,
    /// Distinct client addresses the user may be online from; 0: any.
    pub device_limit: u32,
}

impl AccountSpec {
    /// A user with no limits.
    pub fn new(name: &str, password: &str) -> AccountSpec {
        AccountSpec {
            name: name.to_owned(),
            password: password.to_owned(),
            speed_limit: 0,
            device_limit: 0,
        }
    }
}

/// One user, shared by its sessions on every core.
#[derive(Debug)]
pub struct Account {
    name: String,
    hash: PasswordHash,
    speed: SpeedLimit,
    device_limit: AtomicU32,
    revoked: AtomicBool,
}

impl Account {
    fn new(spec: &AccountSpec, hash: PasswordHash, now: Instant) -> Account {
        Account {
            name: spec.name.clone(),
            hash,
            speed: SpeedLimit::new(spec.speed_limit, now),
            device_limit: AtomicU32::new(spec.device_limit),
            revoked: AtomicBool::new(false),
        }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's speed limit, shared by its sessions on every core.
    pub fn speed(&self) -> &SpeedLimit {
        &self.speed
    }

    /// Distinct client addresses the user may be online from, if limited.
    pub fn device_limit(&self) -> Option<u32> {
        Some(self.device_limit.load(Relaxed)).filter(|&n| n > 0)
    }

    /// Whether the user was removed (or its password changed): its sessions end.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Relaxed)
    }

    fn update(&self, spec: &AccountSpec) {
        self.speed.set_rate(spec.speed_limit);
        self.device_limit.store(spec.device_limit, Relaxed);
    }
}

/// What a new list changed, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Users not in the old list (or whose password changed), by name.
    pub added: Vec<String>,
    /// Users of the old list that are gone (or whose password changed): revoked.
    pub removed: Vec<String>,
    /// Users kept whose limits changed.
    pub limits_changed: Vec<String>,
}

impl std::fmt::Display for Changes {
    /// `2 added (carol, dave), 1 removed (bob), 0 with new limits`, at most ten
    /// names per list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lists = [
            ("added", &self.added),
            ("removed (their sessions are closed)", &self.removed),
            ("with new limits", &self.limits_changed),
        ];
        for (index, (what, names)) in lists.into_iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(f, "{separator}{} {what}", names.len())?;
            if !names.is_empty() {
                let shown: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
                let more = names.len().saturating_sub(shown.len());
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                write!(f, " ({}{more})", shown.join(", "))?;
            }
        }
        Ok(())
    }
}

/// A list could not become accounts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountsError {
    /// Two users share a password: the server could not tell them apart.
    #[error("users {0:?} and {1:?} have the same password")]
    SamePassword(String, String),
    /// Two users share a name.
    #[error("user {0:?} is listed twice")]
    SameName(String),
    /// A password is empty.
    #[error("user {0:?} has an empty password")]
    EmptyPassword(String),
}

/// The users a server accepts, found by password hash.
#[derive(Debug, Default)]
pub struct Accounts {
    /// `PasswordHash`'s equality is constant-time and its hash is keyed per
    /// process, so a lookup's timing says nothing a prober could use.
    by_hash: HashMap<PasswordHash, Arc<Account>>,
}

impl Accounts {
    /// The accounts of `specs`, all new.
    pub fn new(specs: &[AccountSpec]) -> Result<Accounts, AccountsError> {
        Accounts::default()
            .succeeded_by(specs)
            .map(|(accounts, _)| accounts)
    }

    /// The accounts after `specs` replace this list: users whose name and
    /// password are unchanged keep their account (limits updated); every other
    /// account of this list is revoked. On error nothing is revoked.
    pub fn succeeded_by(
        &self,
        specs: &[AccountSpec],
    ) -> Result<(Accounts, Changes), AccountsError> {
        let now = Instant::now();
        let mut by_hash = HashMap::with_capacity(specs.len());
        let mut names = HashMap::with_capacity(specs.len());
        let mut changes = Changes::default();
        let mut updates = Vec::new();
        for spec in specs {
            if spec.password.is_empty() {
                return Err(AccountsError::EmptyPassword(spec.name.clone()));
            }
            if names.insert(spec.name.as_str(), ()).is_some() {
                return Err(AccountsError::SameName(spec.name.clone()));
            }
            let hash = PasswordHash::of(&spec.password);
            let account = match self.by_hash.get(&hash) {
                Some(old) if old.name == spec.name => {
                    updates.push((old.clone(), spec));
                    old.clone()
                }
                _ => {
                    changes.added.push(spec.name.clone());
                    Arc::new(Account::new(spec, hash, now))
                }
            };
            if let Some(other) = by_hash.insert(hash, account) {
                return Err(AccountsError::SamePassword(
                    other.name.clone(),
                    spec.name.clone(),
                ));
            }
        }
        for (account, spec) in updates {
            let before = (account.speed.rate(), account.device_limit.load(Relaxed));
            account.update(spec);
            if before != (spec.speed_limit, spec.device_limit) {
                changes.limits_changed.push(spec.name.clone());
            }
        }
        for (hash, old) in &self.by_hash {
            if !by_hash.get(hash).is_some_and(|new| Arc::ptr_eq(new, old)) {
                old.revoked.store(true, Relaxed);
                changes.removed.push(old.name.clone());
            }
        }
        Ok((Accounts { by_hash }, changes))
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no user is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The account whose password hashes to `presented`.
    pub fn authenticate(&self, presented: &PasswordHash) -> Option<&Arc<Account>> {
        let account = self.by_hash.get(presented)?;
        debug_assert!(account.hash == *presented);
        Some(account)
    }

    /// Every account, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.by_hash.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, password: &str, speed: u64, devices: u32) -> AccountSpec {
        AccountSpec {
            speed_limit: speed,
            device_limit: devices,
            ..AccountSpec::new(name, password)
        }
    }

    #[test]
    fn users_match_only_their_password() {
        let accounts =
            Accounts::new(&[spec("alice", "a-pass", 0, 0), spec("bob", "b-pass", 0, 2)]).unwrap();
        let bob = accounts.authenticate(&PasswordHash::of("b-pass")).unwrap();
        assert_eq!((bob.name(), bob.device_limit()), ("bob", Some(2)));
        let alice = accounts.authenticate(&PasswordHash::of("a-pass")).unwrap();
        assert_eq!((alice.name(), alice.device_limit()), ("alice", None));
        assert!(accounts.authenticate(&PasswordHash::of("wrong")).is_none());
        assert!(Accounts::default()
            .authenticate(&PasswordHash::of(""))
            .is_none());
    }

    #[test]
    fn a_new_list_keeps_unchanged_users_and_revokes_the_rest() {
        let old = Accounts::new(&[
            spec("alice", "a", 0, 0),
            spec("bob", "b", 0, 0),
            spec("carol", "c", 0, 0),
        ])
        .unwrap();
        let alice = old.authenticate(&PasswordHash::of("a")).unwrap().clone();
        let bob = old.authenticate(&PasswordHash::of("b")).unwrap().clone();
        let carol = old.authenticate(&PasswordHash::of("c")).unwrap().clone();
        let (new, changes) = old
            .succeeded_by(&[
                spec("alice", "a", 1000, 3),
                spec("carol", "c2", 0, 0),
                spec("dave", "d", 0, 0),
            ])
            .unwrap();
        let mut removed = changes.removed.clone();
        removed.sort();
        assert_eq!(changes.added, ["carol", "dave"]);
        assert_eq!(removed, ["bob", "carol"]);
        assert_eq!(changes.limits_changed, ["alice"]);
        assert_eq!(
            Changes { removed, ..changes.clone() }.to_string(),
            "2 added (carol, dave), 2 removed (their sessions are closed) (bob, carol), 1 with new limits (alice)"
        );
        assert!(!alice.is_revoked(), "unchanged users keep their sessions");
        assert!(Arc::ptr_eq(
            &alice,
            new.authenticate(&PasswordHash::of("a")).unwrap()
        ));
        assert_eq!(
            (alice.speed().rate(), alice.device_limit()),
            (1000, Some(3))
        );
        assert!(bob.is_revoked(), "removed");
        assert!(carol.is_revoked(), "password changed");
        assert!(new.authenticate(&PasswordHash::of("c")).is_none());
        assert!(new.authenticate(&PasswordHash::of("c2")).is_some());
    }

    #[test]
    fn a_bad_list_revokes_nobody() {
        let old = Accounts::new(&[spec("alice", "a", 0, 0)]).unwrap();
        let alice = old.authenticate(&PasswordHash::of("a")).unwrap().clone();
        assert_eq!(
            old.succeeded_by(&[spec("x", "same", 0, 0), spec("y", "same", 0, 0)])
                .unwrap_err(),
            AccountsError::SamePassword("x".into(), "y".into())
        );
        assert_eq!(
            old.succeeded_by(&[spec("x", "1", 0, 0), spec("x", "2", 0, 0)])
                .unwrap_err(),
            AccountsError::SameName("x".into())
        );
        assert_eq!(
            old.succeeded_by(&[spec("x", "", 0, 0)]).unwrap_err(),
            AccountsError::EmptyPassword("x".into())
        );
        assert!(!alice.is_revoked());
    }

    #[test]
    fn a_hundred_thousand_users() {
        let specs: Vec<AccountSpec> = (0..100_000)
            .map(|i| spec(&i.to_string(), &format!("uuid-{i}"), 0, 0))
            .collect();
        let accounts = Accounts::new(&specs).unwrap();
        assert_eq!(accounts.len(), 100_000);
        let found = accounts
            .authenticate(&PasswordHash::of("uuid-99999"))
            .unwrap();
        assert_eq!(found.name(), "99999");
        let (again, changes) = accounts.succeeded_by(&specs[1..]).unwrap();
        assert_eq!(
            (again.len(), changes.removed.len(), changes.added.len()),
            (99_999, 1, 0)
        );
    }
}
