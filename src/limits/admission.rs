//! Admission: node capacity, per-user connection slots and deactivated
//! users, checked before the upgrade.
//!
//! It holds the set of deactivated users and refuses them; it does not
//! decide when the set changes or what else a deactivation does (tell the
//! other nodes, close connections): that is the hub's `deactivation`
//! module, the only caller of `deactivate`, `activate` and
//! `replace_inactive` outside tests.
//!
//! Slots are reserved as RAII [`ConnectionPermit`]s (never check-then-act):
//! the counter is incremented first and rolled back on refusal, and the
//! permit travels with the connection into its shard and frees the slot
//! when the connection is dropped. Per-user counts are striped over small
//! `parking_lot` mutexes, taken once at connect and once at disconnect,
//! never on the message path.
//!
//! Per-user counting is pluggable: the local counters always run (they are
//! this node's truth and the fallback), and in cluster mode a
//! [`SharedSlots`] implementation (the Redis backplane) additionally
//! reserves the slot cluster-wide, atomically, in [`Admission::admit`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::pin::Pin;
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

/// A future returned by [`SharedSlots::acquire`].
pub type SlotFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, AdmissionError>> + Send + 'a>>;

/// Per-user slots shared by every node of a cluster.
pub trait SharedSlots: Send + Sync {
    /// Reserves one of `user`'s `limit` slots cluster-wide, atomically (no
    /// check-then-act), returning the slot's id; refuses with
    /// `TooManyForUser` or `UserInactive`. When the shared store is
    /// unreachable it admits (degraded: local counting only) and still
    /// returns an id, so the slot is counted once the store is back.
    fn acquire<'a>(&'a self, user: &'a Arc<str>, limit: usize) -> SlotFuture<'a>;

    /// Frees a slot. Called from `Drop`: must not block or await.
    fn release(&self, user: &Arc<str>, slot: u64);
}

pub struct Admission {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Box<[UserCounts]>,
    inactive: RwLock<HashSet<String>>,
    shared: Option<Arc<dyn SharedSlots>>,
}

/// One reserved connection slot; dropping it frees the slot.
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    user: Arc<str>,
    /// The cluster-wide slot, in cluster mode.
    shared_slot: Option<u64>,
}

impl ConnectionPermit {
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }

    /// True when the user has been deactivated since the slot was taken.
    pub fn user_inactive(&self) -> bool {
        self.admission.is_inactive(&self.user)
    }

    /// True when `user` (any user) is deactivated: for a refreshed token,
    /// checked like a connecting one.
    pub fn is_inactive(&self, user: &str) -> bool {
        self.admission.is_inactive(user)
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
    #[cfg(test)]
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Self::with_shared(max_total, max_per_user, None)
    }

    /// Admission whose per-user slots are also reserved in `shared`.
    pub fn with_shared(
        max_total: usize,
        max_per_user: usize,
        shared: Option<Arc<dyn SharedSlots>>,
    ) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_user,
            total: AtomicUsize::new(0),
            per_user: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            inactive: RwLock::new(HashSet::new()),
            shared,
        })
    }

    /// Reserves a slot for `user` on this node and, in cluster mode,
    /// cluster-wide; or says why not.
    pub async fn admit(self: &Arc<Self>, user: &str) -> Result<ConnectionPermit, AdmissionError> {
        let mut permit = self.try_admit(user)?;
        if let Some(shared) = &self.shared {
            // On refusal the local slot goes back when `permit` drops.
            permit.shared_slot = Some(shared.acquire(&permit.user, self.max_per_user).await?);
        }
        Ok(permit)
    }

    fn stripe(&self, user: &str) -> &UserCounts {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user);
        &self.per_user[(hash as usize) % STRIPES]
    }

    /// Reserves a slot for `user` on this node only, or says why not.
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
            shared_slot: None,
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

    /// True when the node holds `max_total` connections (a cheap early
    /// refusal; the reservation itself is `try_admit`'s).
    pub fn is_full(&self) -> bool {
        self.total.load(Ordering::Acquire) >= self.max_total
    }

    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    #[cfg(test)]
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

    /// Replaces the deactivated users with `users` (the cluster's set, when
    /// a node joins or rejoins); returns those that were not inactive here.
    pub fn replace_inactive(&self, users: HashSet<String>) -> Vec<String> {
        let mut inactive = self.inactive.write();
        let added = users.difference(&inactive).cloned().collect();
        *inactive = users;
        added
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let (Some(slot), Some(shared)) = (self.shared_slot, &self.admission.shared) {
            shared.release(&self.user, slot);
        }
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
