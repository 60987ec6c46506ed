//! `GET /console`: the operator console, a static page compiled into the
//! binary so it works offline (no CDN, no external fonts). The page talks
//! to the gateway only through the public WebSocket endpoint, the server
//! API and `/metrics`, like any other client.
//!
//! Every console answer carries a strict Content-Security-Policy (this
//! origin only, no inline script or style), refuses framing and sniffing,
//! and sends no referrer: the page handles an API key and a token, so no
//! other origin may script, frame or be told about it. It must not serve
//! anything but the files listed here.

use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};

use super::response::{static_body, Response};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `'self'` covers same-origin `ws:`/`wss:` too (CSP level 3), which is all
/// the page's WebSocket needs.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// (route, content type, body). `/console/vendor/` holds third-party code,
/// each file with its license beside it.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/console",
        HTML,
        include_str!("../../clients/console/index.html"),
    ),
    (
        "/console/console.js",
        JS,
        include_str!("../../clients/console/console.js"),
    ),
    (
        "/console/operator.js",
        JS,
        include_str!("../../clients/console/operator.js"),
    ),
    (
        "/console/console.css",
        CSS,
        include_str!("../../clients/console/console.css"),
    ),
    (
        "/console/wsgate.js",
        JS,
        include_str!("../../clients/js/wsgate.js"),
    ),
    (
        "/console/vendor/uPlot.iife.min.js",
        JS,
        include_str!("../../clients/console/vendor/uPlot.iife.min.js"),
    ),
    (
        "/console/vendor/uPlot.min.css",
        CSS,
        include_str!("../../clients/console/vendor/uPlot.min.css"),
    ),
    (
        "/console/vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../../clients/console/vendor/uPlot.LICENSE"),
    ),
];

/// The console asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<Response> {
    let path = match path {
        "/console/" | "/console/index.html" => "/console",
        other => other,
    };
    let &(_, content_type, body) = ASSETS.iter().find(|(route, _, _)| *route == path)?;
    let mut response = static_body(content_type, body);
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_FRAME_OPTIONS, "DENY"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        // A page served from the binary changes with the binary: never let
        // a browser keep the old console after an upgrade.
        (CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}
