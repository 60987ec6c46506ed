//! One webhook call: the HTTP or HTTPS client (rustls, trusting the
//! system's roots plus `--webhook-ca-file`), the auth headers, the
//! `Wsgate-Signature` and the retries with backoff.
//!
//! Owns no queue and no task: the parent module decides when and how many
//! calls run at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use sha2::Sha256;

use super::{LogLimiter, LOG_INTERVAL};
use crate::config::WebhookConfig;
use crate::metrics::Metrics;

const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook-url: cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// POSTs one call, with its retries.
pub(super) struct Caller {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: hyper::Uri,
    bearer: Option<String>,
    signing_key: Option<String>,
    metrics: Arc<Metrics>,
    failed_attempts: LogLimiter,
}

impl Caller {
    /// `--webhook-secret`, when set, is the bearer instead of the API key.
    pub(super) fn new(
        config: &WebhookConfig,
        api_key: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Caller, WebhookError> {
        let https = config.url.scheme_str() == Some("https");
        let tls = tls_config(https, &config.extra_roots)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Caller {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: config.url.clone(),
            bearer: config.secret.clone().or(api_key),
            signing_key: config.secret.clone(),
            metrics,
            failed_attempts: LogLimiter::new(LOG_INTERVAL),
        })
    }

    /// `Err` with the last failure once every attempt has failed.
    pub(super) async fn deliver(&self, body: Bytes) -> Result<(), String> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let error = match self.attempt(&body).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            self.metrics.webhook_attempt_failed();
            if let Some(failures) = self.failed_attempts.record() {
                tracing::warn!(
                    attempt,
                    of = MAX_ATTEMPTS,
                    failures_since_last_report = failures,
                    %error,
                    "webhook attempt failed"
                );
            }
            if attempt == MAX_ATTEMPTS {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn attempt(&self, body: &Bytes) -> Result<(), String> {
        let mut request =
            Request::post(self.url.clone()).header("content-type", "application/json");
        if let Some(bearer) = &self.bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        if let Some(key) = &self.signing_key {
            // Signed per attempt, so a retry carries a fresh timestamp.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request.header("wsgate-signature", signature_header(key, now, body));
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("refused with status {}", response.status())),
            Ok(Err(error)) => Err(error_chain(&error)),
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        }
    }
}

/// The value of `Wsgate-Signature`: `t=UNIX_SECONDS,v1=HEX`, HMAC-SHA256
/// with `secret` over `t + "." + body`.
pub fn signature_header(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    let t = unix_seconds.to_string();
    let mut mac =
        <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// The system's roots (only read for an `https://` URL) and the extra ones.
fn tls_config(
    https: bool,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    if https {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "cannot read some of the system's CA certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system CA certificates for the webhook");
    }
    // Checked by the configuration already, so none fails here.
    roots.add_parsable_certificates(extra_roots.iter().cloned());
    if https && roots.is_empty() {
        tracing::warn!("no trusted CA certificate for the https:// webhook: every call will fail (see --webhook-ca-file)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// hyper's errors say "client error (Connect)"; the cause (a refused
/// connection, an unknown certificate issuer) is in the source chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Expected value from Python's hmac module (as in docs/WEBHOOKS.md).
        assert_eq!(
            signature_header("Jefe", 1_700_000_000, b"{\"a\":1}"),
            "t=1700000000,v1=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
