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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::auth::{Claims, TokenVerifier};
    use crate::cluster::LocalBackplane;
    use crate::hub::command::NewConnection;
    use crate::hub::shard::{ShardSettings, ShardShared};
    use crate::hub::Hub;
    use crate::limits::Admission;
    use crate::ws::CloseReason;

    /// The losing order of a deactivation racing an upgrade, made exact: the
    /// upgrade passed its inactive check, the deactivation then ran (and found
    /// nothing to close), and only then does the shard register the
    /// connection. The shard re-checks the user and closes it with 4003
    /// instead of serving it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_registered_after_its_user_was_deactivated_is_closed_4003() {
        let settings = ShardSettings::for_tests();
        let admission = Admission::new(10, 3);
        let verifier =
            TokenVerifier::new(&crate::Config::embedded("secret", "key").auth).expect("verifier");
        let hub = Hub::start(
            1,
            settings,
            ShardShared {
                metrics: Arc::default(),
                webhook: None,
                backplane: Arc::new(LocalBackplane),
                verifier: Arc::new(verifier),
            },
            "node".into(),
            admission.clone(),
        )
        .expect("hub");
        let permit = admission.admit("late").await.expect("admitted");
        admission.deactivate("late");
        let closed = hub
            .disconnect_user("late", CloseReason::Disconnected)
            .await
            .expect("shard running");
        assert_eq!(closed, 0);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (socket, _) = listener.accept().expect("accept");
        socket.set_nonblocking(true).expect("non-blocking");
        hub.register(NewConnection {
            socket,
            already_read: Default::default(),
            claims: Claims {
                user_id: "late".into(),
                exp: u64::MAX / 2,
            },
            token_notice: false,
            permit,
            tls: None,
            echo: false,
            resume: false,
        })
        .await
        .expect("registered");

        let first = tokio::task::spawn_blocking(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut head = [0u8; 4];
            client.read_exact(&mut head).expect("a first frame");
            head
        })
        .await
        .expect("reader");
        assert_eq!(
            first[0], 0x88,
            "the first frame must be a close, got {first:?}"
        );
        assert_eq!(u16::from_be_bytes([first[2], first[3]]), 4003);
        assert!(hub
            .connections(Some("late"))
            .await
            .expect("list")
            .is_empty());
        hub.shutdown(Duration::ZERO, Duration::from_millis(100))
            .await;
    }
}
