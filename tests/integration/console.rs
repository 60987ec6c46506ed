//! `GET /console` (SPEC section 4) as a browser meets it: the security
//! headers on every console file, a page that runs under its own CSP, and
//! the server API data the operator view reads. The page's behaviour is
//! tested in Chromium (clients/js/test/console.browser.test.mjs).

use crate::support::TestServer;
use serde_json::json;
use std::time::{Duration, Instant};

const CONSOLE_FILES: [&str; 10] = [
    "/console",
    "/console/",
    "/console/index.html",
    "/console/console.js",
    "/console/operator.js",
    "/console/console.css",
    "/console/wsgate.js",
    "/console/vendor/uPlot.iife.min.js",
    "/console/vendor/uPlot.min.css",
    "/console/vendor/uPlot.LICENSE",
];

#[test]
fn every_console_file_answers_with_the_security_headers() {
    let server = TestServer::start(&[]);
    for path in CONSOLE_FILES {
        let r = server.get_public(path);
        r.expect_status(200);
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP {csp:?} lacks {directive}"
            );
        }
        for loose in [
            "unsafe-inline",
            "unsafe-eval",
            "*",
            "http:",
            "https:",
            "data:",
        ] {
            assert!(!csp.contains(loose), "{path}: CSP {csp:?} allows {loose}");
        }
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    server.get_public("/console/nope.js").expect_status(404);
}

#[test]
fn the_page_has_nothing_inline_that_its_csp_would_block() {
    let server = TestServer::start(&[]);
    let html = server.get_public("/console").text.to_lowercase();
    let mut scripts = 0;
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').unwrap_or(0)];
        assert!(tag.contains(" src="), "inline script: {tag}");
        scripts += 1;
    }
    assert!(
        scripts >= 2,
        "the page loads its chart library and its module"
    );
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style="), "inline style attribute");
    assert!(!html.contains("href=\"data:"), "data: URL (CSP img-src)");
    for handler in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onchange=",
        " oninput=",
    ] {
        assert!(!html.contains(handler), "inline handler {handler}");
    }
    assert!(!html.contains("javascript:"), "javascript: URL");
}

#[test]
fn connections_report_their_queued_bytes() {
    let server = TestServer::start(&["--max-queued-bytes", "67108864"]);
    let reader = server.ws("reads");
    let _stalled = server.ws("stalled");
    let listed = server.connections(Some("reads"));
    assert_eq!(listed[0]["queued_bytes"], 0, "{listed:?}");
    assert_eq!(listed[0]["connection_id"], reader.connection_id());
    // A client that never reads: once the socket buffers are full, the
    // gateway's queue for it grows, and the list says by how much.
    let chunk = "x".repeat(60_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    let queued = loop {
        server.publish(
            &json!({"type": "system.notification", "data": {"pad": chunk}, "users": ["stalled"]}),
        );
        let queued = server.connections(Some("stalled"))[0]["queued_bytes"]
            .as_u64()
            .expect("queued_bytes is an integer");
        if queued > 0 || Instant::now() > deadline {
            break queued;
        }
    };
    assert!(
        queued > 0,
        "a stalled reader's queue never showed (60 s of publishing)"
    );
    assert!(queued <= 67_108_864, "within --max-queued-bytes: {queued}");
}

#[test]
fn single_node_stats_carry_no_cluster_fields() {
    let server = TestServer::start(&[]);
    let stats = server.api_get("/api/v1/stats").json;
    assert!(stats["node_id"].is_string(), "{stats}");
    assert!(stats.get("backplane").is_none(), "{stats}");
    assert!(stats.get("nodes").is_none(), "{stats}");
}
