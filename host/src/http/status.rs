//! The status page: one HTML page with its script and stylesheet, compiled into the
//! binary, served without authentication at `GET /`.
//!
//! The page itself holds no data. Its script reads the admin API (`/api/plugins`,
//! `/api/rooms`, `/api/stats`, `/api/events/stream`) and posts the plugin actions. Opened
//! through the one-time login URL the host prints at start, the browser holds a session
//! cookie and the API just answers; otherwise, when the API answers 401, the page asks
//! for the admin token and keeps it in the tab's `sessionStorage`, so the token never
//! travels to a page that was not asked for it.
//!
//! * `GET /` — the page ([`index`]; the login itself is `super::auth::redeem_login`).
//! * `GET /status/app.js`, `GET /status/style.css`, `GET /status/icon.svg` — its assets.
//!
//! Every response carries a content security policy that allows only this origin: no
//! inline script, no third-party requests, no framing. The page works without internet.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

const INDEX_HTML: &str = include_str!("status/index.html");
const APP_JS: &str = include_str!("status/app.js");
const STYLE_CSS: &str = include_str!("status/style.css");
const ICON_SVG: &str = include_str!("status/icon.svg");

/// Only this origin; the script talks to the API with `fetch` and `EventSource`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/status/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/status/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/status/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

/// The page itself.
pub fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary; a reload after an upgrade must not mix versions.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The event stream's URL may carry the token; never send it on as a referrer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_only_assets_that_are_served() {
        for path in ["/status/app.js", "/status/style.css", "/status/icon.svg"] {
            assert!(INDEX_HTML.contains(path), "index.html does not load {path}");
        }
        // No third-party origin: the page must work offline and under the CSP.
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline script breaks the CSP"
        );
        assert!(
            !INDEX_HTML.contains("style=\""),
            "inline style breaks the CSP"
        );
    }
}
