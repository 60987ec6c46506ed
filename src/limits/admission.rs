//! Admission: node capacity, per-user connection slots and deactivated
//! users, checked before the upgrade.
//!
//! Slots are reserved as RAII [`ConnectionPermit`]s (never check-then-act):
//! the counter is incremented first and rolled back on refusal, and the
//! permit travels with the connection into its shard and frees the slot
//! when the connection is dropped. Per-user counts are striped over small
//! `parking_lot` mutexes, taken once at connect and once at disconnect,
//! never on the message path.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

const STRIPES: usize = 64;

/// Connection counts of the users whose names hash to one stripe.
type UserCounts = Mutex<HashMap<Arc<str>, usize>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the user already holds the maximum number of connections")]
    TooManyForUser,
    #[error("the server is at capacity")]
    AtCapacity,
    #[error("user inactive")]
    UserInactive,
}

pub struct Admission {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Box<[UserCounts]>,
    inactive: RwLock<HashSet<String>>,
}

/// One reserved connection slot; dropping it frees the slot.
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    user: Arc<str>,
}

impl ConnectionPermit {
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }
}

impl std::fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("user", &self.user)
            .finish()
    }
}

impl Admission {
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_user,
            total: AtomicUsize::new(0),
            per_user: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            inactive: RwLock::new(HashSet::new()),
        })
    }

    fn stripe(&self, user: &str) -> &UserCounts {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user);
        &self.per_user[(hash as usize) % STRIPES]
    }

    /// Reserves a slot for `user`, or says why not.
    pub fn try_admit(self: &Arc<Self>, user: &str) -> Result<ConnectionPermit, AdmissionError> {
        if self.is_inactive(user) {
            return Err(AdmissionError::UserInactive);
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmissionError::AtCapacity);
        }
        let mut stripe = self.stripe(user).lock();
        let user: Arc<str> = match stripe.get_key_value(user) {
            Some((key, count)) if *count >= self.max_per_user => {
                let _ = key;
                drop(stripe);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(AdmissionError::TooManyForUser);
            }
            Some((key, _)) => key.clone(),
            None => Arc::from(user),
        };
        *stripe.entry(user.clone()).or_insert(0) += 1;
        drop(stripe);
        Ok(ConnectionPermit {
            admission: self.clone(),
            user,
        })
    }

    fn release(&self, user: &str) {
        let mut stripe = self.stripe(user).lock();
        if let Some(count) = stripe.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                stripe.remove(user);
            }
        }
        drop(stripe);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub fn user_connections(&self, user: &str) -> usize {
        self.stripe(user).lock().get(user).copied().unwrap_or(0)
    }

    pub fn deactivate(&self, user: &str) {
        self.inactive.write().insert(user.to_owned());
    }

    pub fn activate(&self, user: &str) {
        self.inactive.write().remove(user);
    }

    pub fn is_inactive(&self, user: &str) -> bool {
        let inactive = self.inactive.read();
        !inactive.is_empty() && inactive.contains(user)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.admission.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits_with_release() {
        let admission = Admission::new(4, 2);
        let a1 = admission.try_admit("a").expect("a1");
        let _a2 = admission.try_admit("a").expect("a2");
        assert_eq!(
            admission.try_admit("a").err(),
            Some(AdmissionError::TooManyForUser)
        );
        let _b1 = admission.try_admit("b").expect("b1");
        let _c1 = admission.try_admit("c").expect("c1");
        assert_eq!(
            admission.try_admit("d").err(),
            Some(AdmissionError::AtCapacity)
        );
        assert_eq!(admission.connections(), 4);
        drop(a1);
        assert_eq!(admission.user_connections("a"), 1);
        let _d1 = admission.try_admit("d").expect("slot freed");
    }

    #[test]
    fn deactivated_users_are_refused_until_activated() {
        let admission = Admission::new(10, 3);
        admission.deactivate("x");
        assert_eq!(
            admission.try_admit("x").err(),
            Some(AdmissionError::UserInactive)
        );
        admission.activate("x");
        assert!(admission.try_admit("x").is_ok());
    }

    #[test]
    fn concurrent_admits_never_exceed_the_limit() {
        let admission = Admission::new(1000, 3);
        let permits: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| admission.try_admit("same").ok()))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().expect("join"))
                .collect()
        });
        assert_eq!(permits.len(), 3);
        assert_eq!(admission.connections(), 3);
    }
}
