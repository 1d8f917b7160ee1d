//! A value every core reads and the control plane (SIGHUP, the panel) may
//! replace while the server runs.

use std::sync::{Arc, RwLock};

/// A value every core reads and an operator may replace while the server runs
/// (SIGHUP). Readers take a cheap `Arc` snapshot; a replacement is seen by every
/// connection that starts after it.
#[derive(Debug)]
pub struct Reloadable<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Reloadable<T> {
    fn clone(&self) -> Self {
        Reloadable(self.0.clone())
    }
}

impl<T> Reloadable<T> {
    /// Wraps the first value.
    pub fn new(value: T) -> Self {
        Reloadable(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.0.read().expect("reloadable lock poisoned").clone()
    }

    /// Replaces the value for everyone from now on.
    pub fn store(&self, value: T) {
        *self.0.write().expect("reloadable lock poisoned") = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloadable_swaps_for_new_readers() {
        let value = Reloadable::new(1);
        let before = value.load();
        value.store(2);
        assert_eq!((*before, *value.load()), (1, 2));
    }
}
