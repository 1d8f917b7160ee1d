//! What each user's traffic owes the panel: the bytes counted since the last push
//! the panel accepted, plus what an earlier run left unpushed (the state file).
//! Sans-IO: the counters' totals come in, the deltas to push and the file's bytes
//! go out; [`save`] is the one function that touches the disk.
//!
//! A push is accepted only on a 2xx answer whose body says success; anything
//! else (refused, timed out, 5xx, garbage) keeps its deltas for the next push.
//! So an ambiguous push (sent, but the answer was lost) errs toward counting
//! twice, never toward losing: the panel's `push` carries no id it could
//! deduplicate by, and bytes lost cannot be found again while a double count is
//! logged and can be corrected.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bytes (up, down).
pub type Bytes = (u64, u64);

/// The deltas of one push, by user name (the panel's user id).
pub type Deltas = BTreeMap<String, [u64; 2]>;

/// The traffic not yet accepted by the panel.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The counters' totals when the last accepted push was taken.
    baseline: HashMap<String, Bytes>,
    /// Deltas an earlier run left unpushed, or a push taken but not accepted
    /// from totals that have since been forgotten.
    carried: HashMap<String, Bytes>,
}

/// The state file: what was not pushed yet when it was written.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateFile {
    /// The node the deltas belong to (a file of another node is not pushed).
    pub node_id: u64,
    /// Unpushed bytes per user: `[up, down]`.
    pub pending: Deltas,
}

/// A state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing it failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its contents are not a state file.
    #[error("state file {path} is not valid: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

impl Ledger {
    /// A ledger that owes what an earlier run left (`carried`).
    pub fn new(carried: &Deltas) -> Ledger {
        Ledger {
            baseline: HashMap::new(),
            carried: carried
                .iter()
                .map(|(user, [up, down])| (user.clone(), (*up, *down)))
                .collect(),
        }
    }

    /// What the panel is owed given the counters' `totals` now: per user, the
    /// bytes counted since the last accepted push plus what was carried. Users
    /// who owe nothing are left out.
    pub fn owed(&self, totals: &BTreeMap<String, Bytes>) -> Deltas {
        let mut owed = Deltas::new();
        for (user, &(up, down)) in totals {
            let (base_up, base_down) = self.baseline.get(user).copied().unwrap_or_default();
            let (carried_up, carried_down) = self.carried.get(user).copied().unwrap_or_default();
            let delta = [
                up.saturating_sub(base_up) + carried_up,
                down.saturating_sub(base_down) + carried_down,
            ];
            if delta != [0, 0] {
                owed.insert(user.clone(), delta);
            }
        }
        for (user, &(up, down)) in &self.carried {
            if !totals.contains_key(user) && (up, down) != (0, 0) {
                owed.insert(user.clone(), [up, down]);
            }
        }
        owed
    }

    /// The push made from `totals` was accepted: what it carried is paid.
    pub fn accepted(&mut self, totals: &BTreeMap<String, Bytes>) {
        self.baseline = totals.iter().map(|(k, v)| (k.clone(), *v)).collect();
        self.carried.clear();
    }

    /// Whether nothing was ever counted or carried.
    pub fn is_empty(&self) -> bool {
        self.baseline.is_empty() && self.carried.is_empty()
    }
}

impl StateFile {
    /// Reads a state file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<StateFile, StateError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::default()),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text).map_err(|e| StateError::Invalid {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Writes the file (mode 0600) atomically: a temporary file beside it, fsync, rename,
    /// fsync of the directory. A crash leaves either the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let body = serde_json::to_vec(self).expect("a state file serialises");
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let temporary = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(entries: &[(&str, u64, u64)]) -> BTreeMap<String, Bytes> {
        entries
            .iter()
            .map(|(user, up, down)| (user.to_string(), (*up, *down)))
            .collect()
    }

    #[test]
    fn deltas_since_the_last_accepted_push() {
        let mut ledger = Ledger::new(&Deltas::new());
        let first = totals(&[("1", 100, 1000), ("2", 0, 0)]);
        assert_eq!(
            ledger.owed(&first),
            Deltas::from([("1".into(), [100, 1000])])
        );
        ledger.accepted(&first);
        let second = totals(&[("1", 150, 1000), ("2", 5, 7)]);
        assert_eq!(
            ledger.owed(&second),
            Deltas::from([("1".into(), [50, 0]), ("2".into(), [5, 7])])
        );
    }

    #[test]
    fn a_failed_push_is_owed_again_with_what_came_after() {
        let mut ledger = Ledger::new(&Deltas::new());
        let first = totals(&[("1", 100, 10)]);
        let _failed = ledger.owed(&first);
        let later = totals(&[("1", 300, 20)]);
        assert_eq!(ledger.owed(&later), Deltas::from([("1".into(), [300, 20])]));
        ledger.accepted(&later);
        assert!(
            ledger.owed(&later).is_empty(),
            "an accepted push is never sent again"
        );
    }

    #[test]
    fn what_an_earlier_run_left_is_pushed_first_and_once() {
        let carried = Deltas::from([("1".into(), [7, 8]), ("9".into(), [1, 1])]);
        let mut ledger = Ledger::new(&carried);
        let now = totals(&[("1", 3, 2)]);
        assert_eq!(
            ledger.owed(&now),
            Deltas::from([("1".into(), [10, 10]), ("9".into(), [1, 1])])
        );
        ledger.accepted(&now);
        assert!(ledger.owed(&now).is_empty());
    }

    #[test]
    fn the_state_file_round_trips_and_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("anytls-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node-1.json");
        assert_eq!(StateFile::load(&path).unwrap(), StateFile::default());
        let state = StateFile {
            node_id: 1,
            pending: Deltas::from([("5".into(), [1, 2])]),
        };
        state.save(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), state);
        let emptied = StateFile {
            node_id: 1,
            pending: Deltas::new(),
        };
        emptied.save(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), emptied);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            StateFile::load(&path),
            Err(StateError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
