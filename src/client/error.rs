//! What went wrong with a call, in words a user can act on. Every message the client (and the
//! `vigil` commands built on it: `status`, `load`, `chaos`, `mcp`) shows for a target it cannot
//! use is written here, once: a URL without a scheme, nothing listening, a missing or refused
//! token, a server that does not answer in time, a server that is not Vigil.

use std::time::Duration;

use serde_json::Value;

use crate::error::code;

/// The code the load and chaos harnesses record for a call that got no JSON-RPC answer
/// (connection refused or lost, an unreadable answer, an answer missing from a batch).
pub const TRANSPORT_FAILURE: i64 = -1;

/// The JSON-RPC code of a coordinator that is not the active one (a standby): nothing ran.
pub(crate) const NOT_ACTIVE: i64 = code::NOT_ACTIVE;

/// What went wrong with a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a JSON-RPC error object.
    #[error("{}", rpc_text(*code, message, data.as_ref()))]
    Rpc {
        /// The error code (see `docs/api.md`, Errors).
        code: i64,
        /// The server's message.
        message: String,
        /// The error's `data` member, if any (`{field, reason}` for invalid parameters).
        data: Option<Value>,
    },
    /// No answer: the server could not be reached, the connection broke, the call timed out,
    /// or the server answered an HTTP error status other than 401. The message names the
    /// target and what to check.
    #[error("{0}")]
    Transport(String),
    /// The server answered HTTP 401: the bearer token is missing or wrong.
    #[error("{}", unauthorized_text(url, *token_sent))]
    Unauthorized {
        /// The target that refused.
        url: String,
        /// Whether a token was sent (then it is the wrong one).
        token_sent: bool,
    },
    /// The answer could not be read as the expected shape.
    #[error("unreadable answer: {0}")]
    Decode(String),
    /// What answered is not a Vigil server: an HTML page, an answer that is not JSON-RPC, or
    /// an HTTP 404 for the RPC path.
    #[error("{url} is not a Vigil server: {answer}; check --target (host, port and path prefix)")]
    NotVigil {
        /// The target.
        url: String,
        /// What it answered.
        answer: String,
    },
    /// A base URL that is not `http://host:port[/prefix]`.
    #[error("{0}")]
    InvalidUrl(String),
    /// Refused by the client before anything was sent: a method the client cannot carry
    /// (`events.subscribe` through [`Client::call`](super::Client::call)) or options that
    /// cannot work (a heartbeat period not shorter than the TTL).
    #[error("{0}")]
    Usage(String),
    /// The session this waited on is gone for good: closed, dropped, or lost without
    /// re-registering (`reregister(false)`, or its id was taken by another registration).
    #[error("{0}")]
    SessionEnded(String),
}

impl ClientError {
    /// A code for every error: the JSON-RPC code of [`Rpc`](Self::Rpc), `-32002` for
    /// [`Unauthorized`](Self::Unauthorized), −1 otherwise.
    pub fn code(&self) -> i64 {
        match self {
            ClientError::Rpc { code, .. } => *code,
            ClientError::Unauthorized { .. } => code::UNAUTHORIZED,
            ClientError::Transport(_)
            | ClientError::Decode(_)
            | ClientError::NotVigil { .. }
            | ClientError::InvalidUrl(_)
            | ClientError::Usage(_)
            | ClientError::SessionEnded(_) => TRANSPORT_FAILURE,
        }
    }

    /// Whether the call may be tried again later unchanged: a transport failure, a rate
    /// limit, an unavailable store (nothing changed), a change not yet durable (applied;
    /// repeating it is safe), a server-side timeout, or a standby's −32008 (nothing ran; the
    /// client follows it by itself, so this shows only in an answer it could not follow).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Rpc { code, .. } => matches!(
                *code,
                code::RATE_LIMITED
                    | code::STORE_UNAVAILABLE
                    | code::NOT_DURABLE
                    | code::TIMEOUT
                    | NOT_ACTIVE
            ),
            _ => false,
        }
    }
}

/// An RPC error as the server gave it, with what to do for a refused principal.
fn rpc_text(code: i64, message: &str, data: Option<&Value>) -> String {
    let data = data.map(|d| format!(", {d}")).unwrap_or_default();
    let hint = if code == code::UNAUTHORIZED {
        ": this token may not do that; use an operator token (--token or VIGIL_TOKEN)"
    } else {
        ""
    };
    format!("{message} (JSON-RPC error {code}{data}){hint}")
}

fn unauthorized_text(url: &str, token_sent: bool) -> String {
    if token_sent {
        format!(
            "{url} refused the token (HTTP 401): pass the token the server was started with \
             (--token or VIGIL_TOKEN)"
        )
    } else {
        format!("{url} needs a token: pass --token or set VIGIL_TOKEN")
    }
}

/// A duration as people write it: `5 s`, `1.5 s`, `300 ms`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    /// Nothing listens there (connection refused).
    Refused,
    /// No connection within this long.
    TimedOut(Duration),
    /// Anything else (the operating system's words).
    Other(String),
}

impl ConnectFailure {
    /// The failure of a TCP connect (or WebSocket handshake) I/O error.
    pub(crate) fn of_io(e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnectFailure::Refused
        } else {
            ConnectFailure::Other(e.to_string())
        }
    }
}

/// Why a request got no answer. `url` is always the target as the user gave it
/// (`http://host:port[/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransportError {
    /// No connection could be made; nothing was sent, so the request may go elsewhere.
    Connect {
        /// The target.
        url: String,
        /// Why.
        why: ConnectFailure,
    },
    /// Several targets, none reachable (each a [`Connect`](Self::Connect)).
    Unreachable(Vec<TransportError>),
    /// The server answered HTTP 401 (or refused the WebSocket upgrade with 401).
    Unauthorized {
        /// The target.
        url: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The server answered another non-success HTTP status.
    Status {
        /// The target.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The request may have been sent but no answer came back (connection lost, unreadable
    /// framing).
    Failed {
        /// The target.
        url: String,
        /// What broke.
        why: String,
    },
    /// Every server tried answered that it is a standby (−32008) with no active coordinator
    /// to follow, until the call timeout: a takeover under way, or no active at all. Nothing
    /// ran.
    NoActive {
        /// The targets tried, in order.
        urls: Vec<String>,
        /// The call timeout.
        after: Duration,
    },
    /// A standby named an active coordinator whose URL this client cannot use (not
    /// `http://host:port`). Nothing ran.
    BadActive {
        /// The standby that answered.
        url: String,
        /// The active's URL as the standby gave it.
        active: String,
        /// Why it cannot be used (the words of [`bad_target`]).
        why: String,
    },
    /// The request was sent but no answer came back within the call timeout.
    TimedOut {
        /// The target.
        url: String,
        /// The call timeout.
        after: Duration,
        /// The method asked, when known.
        method: Option<String>,
    },
}

impl TransportError {
    /// The code the harnesses record: `-status` for an HTTP status (so −401, −413 as before),
    /// [`TRANSPORT_FAILURE`] otherwise.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn code(&self) -> i64 {
        match self {
            TransportError::Unauthorized { .. } => -401,
            TransportError::Status { status, .. } => -i64::from(*status),
            TransportError::NoActive { .. } | TransportError::BadActive { .. } => NOT_ACTIVE,
            TransportError::Connect { .. }
            | TransportError::Unreachable(_)
            | TransportError::Failed { .. }
            | TransportError::TimedOut { .. } => TRANSPORT_FAILURE,
        }
    }

    /// Whether nothing was sent (the request may go to another server).
    pub(crate) fn before_sending(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. } | TransportError::Unreachable(_)
        )
    }
}

/// Whether an HTTP answer's body is a web page rather than anything an API would send.
fn looks_like_html(body: &str) -> bool {
    let start = body.trim_start();
    start.starts_with('<')
        || start
            .get(..15)
            .is_some_and(|s| s.eq_ignore_ascii_case("<!doctype html>"))
}

/// At most 120 characters of `body`, quoted, on one line.
pub(crate) fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = one_line.chars().take(120).collect();
    if cut.len() < one_line.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Connect {
                url,
                why: ConnectFailure::Refused,
            } => write!(
                f,
                "nothing listens at {url}: is `vigil serve` running there? (--target)"
            ),
            TransportError::Connect {
                url,
                why: ConnectFailure::TimedOut(after),
            } => write!(
                f,
                "{url} did not accept a connection within {}: is the address right and \
                 reachable? (--target)",
                human(*after)
            ),
            TransportError::Connect {
                url,
                why: ConnectFailure::Other(why),
            } => write!(f, "cannot connect to {url}: {why} (--target)"),
            TransportError::Unreachable(all) => {
                let all: Vec<String> = all.iter().map(ToString::to_string).collect();
                write!(f, "{}", all.join("; "))
            }
            TransportError::Unauthorized { url, token_sent } => {
                write!(f, "{}", unauthorized_text(url, *token_sent))
            }
            TransportError::Status { url, status, body } => match (*status, body.trim()) {
                (403, _) => write!(
                    f,
                    "{url} refused the token (HTTP 403 Forbidden): pass a token the server \
                     accepts (--token or VIGIL_TOKEN)"
                ),
                (413, _) => write!(
                    f,
                    "{url} answered HTTP 413: the request is larger than the server's --max-body"
                ),
                (status, "") => write!(f, "{url} answered HTTP {status}"),
                (status, body) => write!(f, "{url} answered HTTP {status}: {}", snippet(body)),
            },
            TransportError::Failed { url, why } => {
                write!(f, "the connection to {url} broke before the answer: {why}")
            }
            TransportError::NoActive { urls, after } => write!(
                f,
                "no active coordinator among {} within {} (a takeover may be under way): those \
                 that answered are standbys (JSON-RPC error -32008); nothing ran, so the call \
                 can be repeated",
                urls.join(", "),
                human(*after)
            ),
            TransportError::BadActive { url, active, why } => write!(
                f,
                "{url} is a standby and names {active} as the active coordinator, which this \
                 client cannot reach: {why}; nothing ran (give the active's http:// address \
                 in --target)"
            ),
            TransportError::TimedOut { url, after, method } => {
                let what = method
                    .as_deref()
                    .map(|m| format!(" {m}"))
                    .unwrap_or_default();
                write!(
                    f,
                    "{url} did not answer{what} within {}: is `vigil serve` running there, \
                     and not stuck? (--target)",
                    human(*after)
                )
            }
        }
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unauthorized { url, token_sent } => {
                ClientError::Unauthorized { url, token_sent }
            }
            TransportError::Status {
                url,
                status,
                ref body,
            } if status == 404 || looks_like_html(body) => {
                let page = if looks_like_html(body) {
                    " with a web page"
                } else {
                    ""
                };
                ClientError::NotVigil {
                    url,
                    answer: format!("its JSON-RPC path answered HTTP {status}{page}"),
                }
            }
            other => ClientError::Transport(other.to_string()),
        }
    }
}

/// The error for an answer that is not JSON-RPC at all.
pub(crate) fn not_json_rpc(url: &str, body: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let answer = if looks_like_html(&text) {
        "it answered a web page instead of JSON-RPC".to_string()
    } else {
        format!("it answered {} instead of JSON-RPC", snippet(&text))
    };
    ClientError::NotVigil {
        url: url.to_string(),
        answer,
    }
}

/// The error for a target that is not an `http://` URL.
pub(crate) fn bad_target(target: &str) -> String {
    if target.starts_with("https://") || target.starts_with("wss://") {
        format!(
            "`{target}` uses TLS, which vigil does not speak: use http:// (behind a TLS proxy, \
             give its plain-HTTP address)"
        )
    } else if let Some(rest) = target.strip_prefix("ws://") {
        format!(
            "`{target}` is a WebSocket URL: use http://{} (choose the WebSocket transport \
             instead; /ws is appended)",
            rest.trim_end_matches("/ws")
        )
    } else if let Some((scheme, _)) = target.split_once("://") {
        format!("`{target}` has the scheme {scheme}://: use http://")
    } else {
        format!("`{target}` has no scheme: use http://{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(5)), "5 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_millis(300)), "300 ms");
    }

    #[test]
    fn each_failure_says_what_to_fix() {
        let url = "http://127.0.0.1:9".to_string();
        let refused = TransportError::Connect {
            url: url.clone(),
            why: ConnectFailure::Refused,
        };
        assert_eq!(
            ClientError::from(refused).to_string(),
            "nothing listens at http://127.0.0.1:9: is `vigil serve` running there? (--target)"
        );
        let timeout = TransportError::TimedOut {
            url: url.clone(),
            after: Duration::from_secs(5),
            method: Some("system.health".into()),
        };
        assert!(
            timeout
                .to_string()
                .starts_with("http://127.0.0.1:9 did not answer system.health within 5 s")
        );
        let missing = TransportError::Unauthorized {
            url: url.clone(),
            token_sent: false,
        };
        assert_eq!(
            ClientError::from(missing).to_string(),
            "http://127.0.0.1:9 needs a token: pass --token or set VIGIL_TOKEN"
        );
        let forbidden = TransportError::Status {
            url: url.clone(),
            status: 403,
            body: String::new(),
        };
        assert!(forbidden.to_string().contains("--token"), "{forbidden}");
        let page = TransportError::Status {
            url: url.clone(),
            status: 200,
            body: "<!DOCTYPE html><html>".into(),
        };
        assert!(matches!(
            ClientError::from(page),
            ClientError::NotVigil { .. }
        ));
        assert_eq!(
            bad_target("localhost:7420"),
            "`localhost:7420` has no scheme: use http://localhost:7420"
        );
        assert!(bad_target("https://h").contains("TLS"));
        assert!(bad_target("ftp://h").contains("ftp://"));
        let rpc = ClientError::Rpc {
            code: code::UNAUTHORIZED,
            message: "not yours".into(),
            data: None,
        };
        assert!(rpc.to_string().contains("operator token"), "{rpc}");
    }
}
