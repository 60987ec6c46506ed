//! `GET /api/v1/ws[/{token}]`: the four token forms → auth → admission →
//! 101 → hand the raw socket to its shard.
//!
//! Every refusal is decided here, before the upgrade: as plain HTTP with a
//! JSON body, or, in accept-then-close mode (`--refusal-mode close`,
//! `?refusal=close`), handed to [`super::refusal`]. After the 101 the
//! connection belongs to the hub; this module keeps nothing. Tokens are
//! never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::response::{ApiError, Response, RETRY_CAPACITY_SECS};
use super::{refusal, uri, AppState};
use crate::auth::{bearer_token, AuthError};
use crate::config::RefusalMode;
use crate::hub::command::NewConnection;
use crate::limits::AdmissionError;
use crate::metrics::RefusalReason;
use crate::ws::upgrade::{self, offered_protocols};

/// Suggested wait before retrying a handshake refused by the connection
/// rate limit, in seconds.
const RETRY_RATE_SECS: u64 = 1;
const SUBPROTOCOL: &str = "wsgate.v1";

/// `path_token` is the decoded `{token}` segment, when the path has one.
pub async fn handle(
    state: &Arc<AppState>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
    path_token: Option<String>,
) -> Response {
    let prepared = upgrade::check_request(request.method(), request.headers())
        .map_err(|e| (RefusalReason::BadRequest, e.into()))
        .and_then(|accept| Ok((accept, refusal_by_close(state, &request)?)));
    let (accept, by_close) = match prepared {
        Ok(prepared) => prepared,
        Err((reason, error)) => return refuse(state, reason, error),
    };
    let admitted = match check(state, peer, &request, path_token, accept.clone()) {
        Ok(checked) => admit(state, checked).await,
        Err(refusal) => Err(refusal),
    };
    match admitted {
        Ok(admitted) => upgrade(state, &mut request, admitted, false),
        Err((reason, error)) => {
            if let Some(close) = refusal::close_reason(&error).filter(|_| by_close) {
                let subprotocol = offers_subprotocol(&request);
                if let Some(response) = refusal::accept_then_close(
                    state,
                    &mut request,
                    accept,
                    subprotocol,
                    &error,
                    close,
                ) {
                    state.metrics.refused(reason);
                    tracing::debug!(code = error.code.as_str(), detail = %error.detail, "handshake refused by close");
                    return response;
                }
            }
            refuse(state, reason, error)
        }
    }
}

fn refuse(state: &AppState, reason: RefusalReason, error: ApiError) -> Response {
    state.metrics.refused(reason);
    tracing::debug!(code = error.code.as_str(), detail = %error.detail, "handshake refused");
    error.into_closing_response()
}

/// Whether refusals of this request are accept-then-close: the server's
/// `--refusal-mode`, or the request's `?refusal=close`. `refusal=http`
/// is accepted and leaves the server's mode; any other value is a 400.
fn refusal_by_close(state: &AppState, request: &Request<Incoming>) -> Result<bool, Refusal> {
    let asked = uri::query_param(request.uri().query(), "refusal").map_err(|e| {
        (
            RefusalReason::BadRequest,
            ApiError::bad_request(format!("`refusal`: {e}")),
        )
    })?;
    let by_request = match asked.as_deref() {
        None | Some("http") => false,
        Some("close") => true,
        Some(_) => {
            return Err((
                RefusalReason::BadRequest,
                ApiError::bad_request("`refusal` must be `http` or `close`"),
            ))
        }
    };
    Ok(by_request || state.config.refusal_mode == RefusalMode::Close)
}

fn offers_subprotocol(request: &Request<Incoming>) -> bool {
    offered_protocols(request.headers()).any(|p| p == SUBPROTOCOL)
}

struct Admitted {
    accept: HeaderValue,
    subprotocol: bool,
    connection: NewConnectionParts,
}

/// `GET /conformance/echo` (only with `--conformance-echo`): an
/// unauthenticated echo connection on the real upgrade and write path, for
/// the Autobahn TestSuite. Each gets its own pseudo-user, so capacity still
/// applies but the per-user limit does not.
pub fn handle_echo(state: &Arc<AppState>, mut request: Request<Incoming>) -> Response {
    let accept = match upgrade::check_request(request.method(), request.headers()) {
        Ok(accept) => accept,
        Err(e) => return ApiError::from(e).into_closing_response(),
    };
    let n = state
        .echo_connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let permit = match state.admission.try_admit(&format!("conformance-echo-{n}")) {
        Ok(permit) => permit,
        Err(_) => return ApiError::at_capacity(RETRY_CAPACITY_SECS).into_closing_response(),
    };
    let claims = crate::auth::Claims {
        user_id: format!("conformance-echo-{n}"),
        exp: u64::MAX,
    };
    let admitted = Admitted {
        accept,
        subprotocol: false,
        connection: NewConnectionParts {
            claims,
            token_notice: false,
            permit,
        },
    };
    upgrade(state, &mut request, admitted, true)
}

struct NewConnectionParts {
    claims: crate::auth::Claims,
    /// `refresh=1`: the connection gets `token.expiring` (SPEC-v2 §3).
    token_notice: bool,
    permit: crate::limits::ConnectionPermit,
}

/// A request that passed the upgrade and token checks.
struct Checked {
    accept: HeaderValue,
    subprotocol: bool,
    claims: crate::auth::Claims,
    token_notice: bool,
}

type Refusal = (RefusalReason, ApiError);

fn unauthorized(e: AuthError) -> Refusal {
    (RefusalReason::Unauthorized, e.into())
}

/// Upgrade headers and token: everything before admission, synchronously.
fn check(
    state: &AppState,
    peer: SocketAddr,
    request: &Request<Incoming>,
    path_token: Option<String>,
    accept: HeaderValue,
) -> Result<Checked, Refusal> {
    // Cheapest refusal first: a reconnect storm costs no signature check.
    if let Some(limiter) = &state.connect_rate {
        if !limiter.try_acquire(peer.ip(), Instant::now()) {
            return Err((
                RefusalReason::ConnectionRate,
                ApiError::at_capacity(RETRY_RATE_SECS),
            ));
        }
    }
    // A full node refuses before the signature check too; the real slot is
    // still reserved race-free by `admit` afterwards.
    if state.admission.is_full() {
        return Err((
            RefusalReason::ServerAtCapacity,
            ApiError::at_capacity(RETRY_CAPACITY_SECS),
        ));
    }
    let verified = extract_token(request, path_token)
        .and_then(|token| state.verifier.verify(&token).map_err(unauthorized));
    let claims = match verified {
        Ok(claims) => claims,
        Err(refusal) => {
            // A bad token must not spend the upgrades valid users need.
            if let Some(limiter) = &state.connect_rate {
                limiter.token_rejected(peer.ip(), Instant::now());
            }
            return Err(refusal);
        }
    };
    let subprotocol = offers_subprotocol(request);
    Ok(Checked {
        accept,
        subprotocol,
        claims,
        token_notice: wants_token_notice(request),
    })
}

/// Reserves the connection's slots: node capacity, and the user's slot on
/// this node or, in cluster mode, cluster-wide (one Redis round trip).
async fn admit(state: &AppState, checked: Checked) -> Result<Admitted, Refusal> {
    let Checked {
        accept,
        subprotocol,
        claims,
        token_notice,
    } = checked;
    let permit = state.admission.admit(&claims.user_id).await.map_err(|e| {
        let reason = match e {
            AdmissionError::UserInactive => RefusalReason::Unauthorized,
            AdmissionError::TooManyForUser => RefusalReason::TooManyConnections,
            AdmissionError::AtCapacity => RefusalReason::ServerAtCapacity,
        };
        (reason, ApiError::from(e))
    })?;
    Ok(Admitted {
        accept,
        subprotocol,
        connection: NewConnectionParts {
            claims,
            token_notice,
            permit,
        },
    })
}

/// `refresh=1` in the query, whichever way the token came: exactly `1`
/// asks for `token.expiring`; absent, any other value or an unreadable
/// query does not (a v1 client never sees the message).
fn wants_token_notice(request: &Request<Incoming>) -> bool {
    uri::query_param(request.uri().query(), "refresh").is_ok_and(|v| v.as_deref() == Some("1"))
}

/// The token from the path, `?token=`, `Authorization: Bearer` or a
/// `bearer.` subprotocol, in that order: 400 for a malformed query, 401
/// for a missing or unreadable token.
fn extract_token(
    request: &Request<Incoming>,
    path_token: Option<String>,
) -> Result<String, Refusal> {
    if let Some(token) = path_token {
        return Ok(token);
    }
    let query = uri::query_param(request.uri().query(), "token").map_err(|e| {
        (
            RefusalReason::BadRequest,
            ApiError::bad_request(format!("`token`: {e}")),
        )
    })?;
    if let Some(token) = query {
        return Ok(token);
    }
    if let Some(value) = request.headers().get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| unauthorized(AuthError::Malformed))?;
        if let Some(token) = bearer_token(value) {
            return Ok(token.to_owned());
        }
    }
    if let Some(token) =
        offered_protocols(request.headers()).find_map(|p| p.strip_prefix("bearer."))
    {
        return Ok(token.to_owned());
    }
    Err(unauthorized(AuthError::Missing))
}

fn upgrade(
    state: &Arc<AppState>,
    request: &mut Request<Incoming>,
    admitted: Admitted,
    echo: bool,
) -> Response {
    // `resume=1` on any endpoint form (SPEC-v2 §2.2); anything else: no hold.
    let resume = !echo
        && uri::query_param(request.uri().query(), "resume")
            .ok()
            .flatten()
            .as_deref()
            == Some("1");
    let on_upgrade = hyper::upgrade::on(request);
    let hub = state.hub.clone();
    let NewConnectionParts {
        claims,
        token_notice,
        permit,
    } = admitted.connection;
    state.tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        // Plain TCP, or TLS whose rustls session moves into the shard too.
        let (tcp, already_read, tls) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (parts.io.into_inner(), parts.read_buf, None),
            Err(upgraded) => {
                match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>() {
                    Ok(parts) => {
                        let (tcp, session) = parts.io.into_inner().into_inner();
                        (tcp, parts.read_buf, Some(Box::new(session)))
                    }
                    Err(_) => {
                        tracing::error!("upgraded connection is neither TCP nor TLS over TCP");
                        return;
                    }
                }
            }
        };
        // into_std leaves the socket in non-blocking mode, as the shard needs.
        let socket = match tcp.into_std() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, "cannot take the upgraded socket");
                return;
            }
        };
        // Deactivated (maybe on another node) while the upgrade finished.
        if permit.user_inactive() {
            tracing::debug!("user deactivated during the upgrade; connection dropped");
            return;
        }
        let connection = NewConnection {
            socket,
            already_read,
            tls,
            claims,
            token_notice,
            permit,
            echo,
            resume,
        };
        if hub.register(connection).await.is_err() {
            tracing::debug!("shard gone during shutdown; connection dropped");
        }
    });
    switching_protocols(admitted.accept, admitted.subprotocol)
}

/// The 101 answer, with `wsgate.v1` when the client offered it.
pub(super) fn switching_protocols(accept: HeaderValue, subprotocol: bool) -> Response {
    let mut response = hyper::Response::new(Default::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    if subprotocol {
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    response
}
