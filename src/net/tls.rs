//! TLS termination (`--tls-cert`, `--tls-key`): the rustls server
//! configuration, loaded from PEM files and swapped on SIGHUP.
//!
//! Owns certificate loading and the current `ServerConfig`. The handshake
//! runs on the accept path (tokio-rustls); after a WebSocket upgrade the
//! rustls session moves into the shard with the raw socket, where it is
//! driven sans-I/O by the reactor. Nothing here touches a connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert: cannot read certificates from {path}: {reason}")]
    Certificates { path: String, reason: String },
    #[error("--tls-key: cannot read a private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("--tls-cert: certificate and key do not form a usable pair: {0}")]
    Config(String),
}

/// The live TLS configuration; readers take a cheap `Arc` clone per accept.
pub struct TlsState {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<TlsState>, TlsError> {
        let config = build_config(cert_path, key_path)?;
        Ok(Arc::new(TlsState {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }

    /// Re-reads the PEM files; on error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.cert_path, &self.key_path)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// Reloads the certificate on every SIGHUP until shutdown.
    pub fn reload_on_sighup(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangup = signal(SignalKind::hangup())?;
            let tls = self.clone();
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        received = hangup.recv() => {
                            if received.is_none() {
                                break;
                            }
                            match tls.reload() {
                                Ok(()) => tracing::info!("TLS certificate reloaded"),
                                Err(error) => tracing::error!(%error, "TLS reload failed; keeping the previous certificate"),
                            }
                        }
                    }
                }
            });
        }
        Ok(())
    }
}

fn build_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Certificates {
            path: cert_path.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
