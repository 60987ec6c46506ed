//! Deactivated users: the one place that says what deactivating or
//! activating a user does, whether the server API, the library handle or
//! another node (through the backplane) asked.
//!
//! Deactivating refuses the user's new handshakes first (so none slips in
//! after the close), then tells the other nodes, then closes the user's
//! connections here with 4003 (`USER_INACTIVE`); a connection whose upgrade raced it is
//! closed by its shard when it registers ([`ConnectionPermit::user_inactive`]).
//! The set itself lives in [`Admission`], which checks it at every
//! handshake; in cluster mode it is also in Redis, where the admission
//! script checks it. This module must not decide anything about slots or
//! capacity.
//!
//! [`ConnectionPermit::user_inactive`]: crate::limits::admission::ConnectionPermit::user_inactive
//! [`Admission`]: crate::limits::Admission

use std::collections::HashSet;

use super::shard::ShardGone;
use super::Hub;
use crate::ws::CloseReason;

impl Hub {
    /// Closes the user's connections with 4003 and refuses new ones, on
    /// every node in cluster mode; returns how many closed on this node.
    pub async fn deactivate_user(&self, user: &str) -> Result<usize, ShardGone> {
        self.admission.deactivate(user);
        self.backplane.user_deactivated(user);
        self.disconnect_user(user, CloseReason::UserInactive).await
    }

    /// Accepts the user's handshakes again, on every node in cluster mode.
    pub fn activate_user(&self, user: &str) {
        self.admission.activate(user);
        self.backplane.user_activated(user);
    }

    /// Another node deactivated `user`: the same, on this node only.
    pub(super) async fn deactivated_elsewhere(&self, user: &str) -> usize {
        self.admission.deactivate(user);
        self.disconnect_user(user, CloseReason::UserInactive)
            .await
            .unwrap_or(0)
    }

    pub(super) fn activated_elsewhere(&self, user: &str) {
        self.admission.activate(user);
    }

    /// The cluster's set replaces this node's (on every join); users it
    /// adds are disconnected here.
    pub(super) async fn adopt_cluster_inactive(&self, users: HashSet<String>) {
        for user in self.admission.replace_inactive(users) {
            let _ = self.disconnect_user(&user, CloseReason::UserInactive).await;
        }
    }

    /// A decision made here while the backplane was away, put back into the
    /// set once a rejoin replaced it; its connections were already closed.
    pub(super) fn restore_decision(&self, user: &str, inactive: bool) {
        if inactive {
            self.admission.deactivate(user);
        } else {
            self.admission.activate(user);
        }
    }
}
