//! The status page at `GET /` (docs/ui.md): one HTML file, its script and its style sheet,
//! embedded in the binary with `include_str!` — no build step, nothing fetched at build or run
//! time. The page is static and holds no state: it is served without a token, and everything
//! it shows it asks the API for with the user's token (`POST /rpc`, `GET /ws`).
//!
//! Every answer carries `Cache-Control: no-cache` and a Content-Security-Policy that lets the
//! page load only its own script and style and talk only to its own origin.

use axum::extract::OriginalUri;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Self only: the page's own script and style sheet (no inline script or style), answers from
/// its own origin (`connect-src 'self'` covers `ws:`/`wss:` to the same host), a `<base>` of
/// its own origin only, no frames, no forms posted anywhere, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' \
                   data:; connect-src 'self'; base-uri 'self'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The paths of the page and its assets, with their content types and bodies.
pub(super) const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/ui/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/ui/style.css", "text/css; charset=utf-8", STYLE_CSS),
];

/// The bytes of every embedded asset together (the figure in docs/ui.md).
#[cfg(test)]
fn embedded_bytes() -> usize {
    ASSETS.iter().map(|(_, _, body)| body.len()).sum()
}

/// The page. Every URL in it is relative (`ui/app.js`, `rpc`, `ws`), so it works wherever the
/// router is mounted; nested in an application under `/vigil` (see [`super::router`]) it is
/// served at `/vigil`, without the trailing slash, and then carries `<base href="/vigil/">`
/// so that those URLs resolve under the prefix.
pub(super) async fn index(OriginalUri(original): OriginalUri) -> Response {
    let path = original.path();
    if path.ends_with('/') {
        return asset(ASSETS[0].1, INDEX_HTML);
    }
    let mut escaped = String::with_capacity(path.len() + 1);
    for c in path.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    let base = format!("<head>\n<base href=\"{escaped}/\">");
    asset(ASSETS[0].1, INDEX_HTML.replacen("<head>", &base, 1))
}

/// One asset, with its headers.
pub(super) fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// What every path that no route takes answers: HTTP 404 with one short line of text naming
/// the endpoints (and, when the page is off, saying so for `GET /`).
pub(super) async fn not_found(ui: bool, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let text = if !ui && path == "/" && (method == Method::GET || method == Method::HEAD) {
        "the status page is off (vigil serve --ui false); the API is at POST /rpc and GET /ws\n"
            .to_string()
    } else {
        let page = if ui { "GET / (status page), " } else { "" };
        format!(
            "no route for {method} {path}; endpoints: {page}POST /rpc, POST /rpc/batch, \
             GET /ws, GET /ws/stats, GET /metrics, GET /healthz{}\n",
            if cfg!(feature = "mcp") {
                ", POST /mcp"
            } else {
                ""
            }
        )
    };
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page must not lean on anything the CSP refuses or that needs the network.
    #[test]
    fn the_page_is_self_contained() {
        for (path, _, body) in ASSETS {
            for banned in [
                "http://",
                "https://",
                "//cdn",
                "<script>",
                " style=\"",
                "eval(",
                "<base",
            ] {
                assert!(!body.contains(banned), "{path} contains {banned:?}");
            }
        }
        assert!(INDEX_HTML.contains("src=\"ui/app.js\""));
        assert!(INDEX_HTML.contains("href=\"ui/style.css\""));
    }

    #[test]
    fn the_assets_stay_small() {
        // docs/ui.md gives the figure; a page that grows past 64 KiB should be looked at.
        assert!(embedded_bytes() < 64 * 1024, "{} bytes", embedded_bytes());
    }
}
