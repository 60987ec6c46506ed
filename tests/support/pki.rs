//! A private certificate authority made per test: a CA certificate (PEM,
//! for `--webhook-ca-file`) and a leaf for `127.0.0.1` and `localhost`
//! signed by it, ready as a rustls server configuration.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

pub struct PrivateCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The leaf's chain (leaf, then CA) and key, as a TLS server uses them.
    pub server_config: Arc<ServerConfig>,
}

impl PrivateCa {
    pub fn new() -> PrivateCa {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wsgate test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("leaf params");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf certificate");

        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        PrivateCa {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        }
    }

    /// Writes the CA certificate to a fresh file and returns its path.
    pub fn write_ca_file(&self, name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "wsgate-ca-{name}-{}-{}.pem",
            std::process::id(),
            super::random_string(8)
        ));
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }
}
