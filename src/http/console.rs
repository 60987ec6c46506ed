//! `GET /console`: the operator console, a static page compiled into the
//! binary so it works offline (no CDN, no external fonts). The page talks
//! to the gateway only through the public WebSocket endpoint and the
//! server API, like any other client.

use super::response::{static_body, Response};

const INDEX: &str = include_str!("../../clients/console/index.html");
const SCRIPT: &str = include_str!("../../clients/console/console.js");
const STYLE: &str = include_str!("../../clients/console/console.css");
const LIBRARY: &str = include_str!("../../clients/js/wsgate.js");

/// The console asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/console" | "/console/" | "/console/index.html" => ("text/html; charset=utf-8", INDEX),
        "/console/console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/console/console.css" => ("text/css; charset=utf-8", STYLE),
        "/console/wsgate.js" => ("text/javascript; charset=utf-8", LIBRARY),
        _ => return None,
    };
    Some(static_body(content_type, body))
}
