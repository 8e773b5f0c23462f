//! The status page at `GET /` (issue 18, points 1–4; docs/ui.md): its HTTP answers, the
//! WebSocket bearer subprotocol browsers use, and the page itself driven in headless Chromium
//! through WebDriver (`/usr/bin/chromedriver`, Debian's `chromium` and `chromium-driver`).
//!
//! The browser tests read the DOM (by `data-testid`s) with one script per look, polled with a
//! deadline; the server runs on the real clock, as the browser does.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use vigil::Config;
use vigil::server::ServerConfig;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "install Debian's chromium and chromium-driver: apt-get update && \
                       apt-get install -y --no-install-recommends chromium chromium-driver";
/// How long the page has to show what a test waits for.
const DEADLINE: Duration = Duration::from_secs(20);

async fn rpc(url: &str, token: Option<&str>, method: &str, params: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

// ---------------------------------------------------------------------------------------------
// HTTP: the page, its headers, the 404s
// ---------------------------------------------------------------------------------------------

/// `GET /` and its assets come without a token, with a content type, `no-cache` and a
/// self-only CSP; `/rpc` still wants the token.
#[tokio::test]
async fn the_page_and_its_assets_are_served_without_a_token_with_a_strict_csp() {
    let server = ServerConfig {
        token: Some("page-operator-token".into()),
        ..ServerConfig::default()
    };
    let (url, _, _stop) = crate::common::serve(Config::default(), server).await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let answer = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(!answer.text().await.unwrap().is_empty(), "{path}");
    }
    let rpc = http
        .post(format!("{url}/rpc"))
        .body(r#"{"jsonrpc":"2.0","method":"system.health","id":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rpc.status(), 401);
}

/// `ui: false` (`vigil serve --ui false`): `GET /` is a 404 whose one line says the page is
/// off; the assets are gone too, and the API is unchanged.
#[tokio::test]
async fn with_the_ui_off_get_root_is_a_404_saying_so() {
    let server = ServerConfig {
        ui: false,
        ..ServerConfig::default()
    };
    let (url, _, _stop) = crate::common::serve(Config::default(), server).await;
    let http = reqwest::Client::new();
    let root = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(root.status(), 404);
    let text = root.text().await.unwrap();
    assert!(text.contains("status page is off"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let js = http.get(format!("{url}/ui/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 404);
    assert!(!js.text().await.unwrap().contains("function"));
    rpc(&url, None, "system.health", json!({})).await;
}

/// An unknown path is a short plain-text 404 that names the endpoints, not an empty body.
#[tokio::test]
async fn an_unknown_path_is_a_404_naming_the_endpoints() {
    let (url, _, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    let answer = reqwest::get(format!("{url}/nope")).await.unwrap();
    assert_eq!(answer.status(), 404);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = answer.text().await.unwrap();
    for endpoint in [
        "GET /nope",
        "GET / (status page)",
        "POST /rpc",
        "GET /ws",
        "/healthz",
    ] {
        assert!(text.contains(endpoint), "{endpoint} missing: {text}");
    }
    assert_eq!(text.lines().count(), 1, "{text}");
}

// ---------------------------------------------------------------------------------------------
// The WebSocket bearer subprotocol, on the wire
// ---------------------------------------------------------------------------------------------

fn bearer_protocol(token: &str) -> String {
    format!(
        "vigil.bearer.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    )
}

/// Opens `/ws` offering `protocols` (none when empty); the HTTP status of a refused upgrade, or the socket and
/// the subprotocol the server chose.
async fn open_ws(
    url: &str,
    protocols: &str,
    authorization: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Option<String>,
    ),
    u16,
> {
    let mut request = format!("{}/ws", url.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    if let Some(auth) = authorization {
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(auth).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            let chosen = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            Ok((ws, chosen))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

/// A browser cannot set `Authorization` on a WebSocket, so it offers its token as the
/// subprotocol `vigil.bearer.<base64url>` beside `vigil.v1`: accepted with a valid token (the
/// upgrade answers `vigil.v1`, never the token), 401 without one, with a wrong one, or with a
/// wrong `Authorization` header beside a right subprotocol.
#[tokio::test]
async fn a_browser_sends_its_token_as_a_websocket_subprotocol() {
    use futures_util::{SinkExt, StreamExt};
    const TOKEN: &str = "operator-token/with+odd=chars";
    let server = ServerConfig {
        token: Some(TOKEN.into()),
        ..ServerConfig::default()
    };
    let (url, _, _stop) = crate::common::serve(Config::default(), server).await;
    let good = format!("vigil.v1, {}", bearer_protocol(TOKEN));
    let (mut ws, chosen) = open_ws(&url, &good, None)
        .await
        .expect("a valid token as a subprotocol opens the socket");
    assert_eq!(chosen.as_deref(), Some("vigil.v1"));
    crate::common::welcome(&mut ws).await;
    // The socket acts for the operator: a call that needs one is answered.
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"jsonrpc":"2.0","method":"system.register","params":{"id":"ws-1","roles":[]},"id":7})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(answer["result"]["registered"], true, "{answer}");

    for (what, protocols, auth) in [
        ("no token", "vigil.v1".to_string(), None),
        (
            "a wrong token",
            format!(
                "vigil.v1, {}",
                bearer_protocol("operator-token/with+odd=chark")
            ),
            None,
        ),
        (
            "the token not in base64url",
            format!("vigil.v1, vigil.bearer.{TOKEN}"),
            None,
        ),
        (
            "a wrong Authorization header beside a right subprotocol",
            good.clone(),
            Some("Bearer wrong"),
        ),
    ] {
        assert_eq!(
            open_ws(&url, &protocols, auth).await.err(),
            Some(401),
            "{what}"
        );
    }
    // The header alone still works, and a client that asks for no subprotocol gets none.
    let (_, chosen) = open_ws(&url, "", Some(&format!("Bearer {TOKEN}")))
        .await
        .expect("the Authorization header opens the socket");
    assert_eq!(chosen, None);
    // The subprotocol is a token for `GET /ws` only: elsewhere, even dressed as an upgrade,
    // it is no token at all.
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/metrics"),
        (reqwest::Method::GET, "/ws/stats"),
        (reqwest::Method::POST, "/rpc/batch"),
        (reqwest::Method::POST, "/ws"),
    ] {
        let answer = http
            .request(method.clone(), format!("{url}{path}"))
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-protocol", &good)
            .body(r#"[{"jsonrpc":"2.0","method":"system.get_state","id":1}]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{method} {path}");
    }
}

// ---------------------------------------------------------------------------------------------
// The page in headless Chromium
// ---------------------------------------------------------------------------------------------

/// chromedriver on a free loopback port with a session of headless Chromium; the driver is
/// killed (by its pid) when this is dropped, also when a test fails.
struct Browser {
    client: fantoccini::Client,
    _driver: Driver,
}

struct Driver {
    child: Child,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium outlives a killed chromedriver: end, by pid, every process started with
        // this test's own profile directory.
        let marker = format!("--user-data-dir={}", self.profile.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        for (path, what) in [(CHROMEDRIVER, "chromedriver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{what} is missing at {path}: the status page tests drive a real browser; {INSTALL}"
            );
        }
        // chromedriver cannot pick its own port: a free one is chosen, released and passed on,
        // and another process may take it in between. Then chromedriver exits at once, seen
        // here, and a new port is tried (a few times).
        for attempt in 1..=3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let profile = std::env::temp_dir().join(format!(
                "vigil-ui-{}-{port}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&profile).unwrap();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}; {INSTALL}"));
            let mut driver = Driver { child, profile };
            let webdriver = format!("http://127.0.0.1:{port}");
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                json!({
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        format!("--user-data-dir={}", driver.profile.display()),
                        format!("--window-size={width},{height}"),
                    ],
                }),
            );
            // The driver takes a moment to listen: retry the session until a deadline.
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = driver.child.try_wait() {
                    assert!(
                        attempt < 3,
                        "{CHROMEDRIVER} exited ({status}) three times; port taken each time?"
                    );
                    break;
                }
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match fantoccini::ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&webdriver)
                    .await
                {
                    Ok(client) => {
                        return Self {
                            client,
                            _driver: driver,
                        };
                    }
                    Err(e) if started.elapsed() < Duration::from_secs(20) => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("no WebDriver session from {CHROMEDRIVER} in 20 s: {e}"),
                }
            }
        }
        unreachable!("the third attempt returns or panics")
    }

    /// Ends the session (chromedriver then quits Chromium); the driver goes when this drops.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// What the page shows now, read from its DOM in one script (so a re-render between two
    /// reads cannot mix two snapshots).
    async fn look(&self) -> Result<Value, fantoccini::error::CmdError> {
        self.client
            .execute(
                r#"
                const q = (s) => [...document.querySelectorAll(s)];
                const t = (id) => { const e = document.querySelector(`[data-testid="${id}"]`); return e ? e.textContent : null; };
                const dbg = window.vigilDebug || {answers: [], frames: []};
                return {
                  rows: q('[data-testid="instance-row"]').map((r) => ({
                    id: r.dataset.id, state: r.dataset.state, leader: r.dataset.leader === "true",
                    text: r.textContent })),
                  leader: document.querySelector('[data-testid="leader"]').dataset.id || null,
                  leaderText: t("leader"), term: t("term"),
                  pending: t("count-pending"), claimed: t("count-in_progress"),
                  completed: t("count-completed"), failed: t("count-failed"),
                  claimedRows: q('[data-testid="claimed-row"]').map((r) => ({
                    task: r.dataset.task,
                    assignee: r.querySelector('[data-testid="assignee"]').textContent })),
                  leases: q('[data-testid="lease-row"]').map((r) => r.dataset.key),
                  events: q('[data-testid="event"]').map((e) => ({type: e.dataset.type, text: e.textContent})),
                  feedState: t("feed-state"),
                  tokenForm: !document.querySelector('[data-testid="token-form"]').hidden,
                  body: document.body.innerText,
                  answers: dbg.answers, frames: dbg.frames,
                  href: location.href,
                  stored: sessionStorage.getItem("vigil.token"),
                  pageLabel: t("page-label"),
                  memory: dbg.feedMemory || null, batches: dbg.batches,
                };"#,
                vec![],
            )
            .await
    }

    /// Looks until `check` finds what it wants (`Some`), for at most [`DEADLINE`]; panics with
    /// the last look otherwise.
    async fn until<T>(&self, what: &str, mut check: impl FnMut(&Value) -> Option<T>) -> T {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < DEADLINE {
            if let Ok(look) = self.look().await {
                if let Some(found) = check(&look) {
                    return found;
                }
                last = look;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The rest says more, and shorter.
        for long in ["body", "answers", "frames"] {
            last[long] = Value::Null;
        }
        panic!("the page did not show {what} within {DEADLINE:?}; last look: {last:#}");
    }
}

/// Heartbeats the ids in `alive` every 500 ms until dropped (the task is aborted then, also when
/// the test fails), or for at most [`TEST_DEADLINE`]: the test takes an id out to let that
/// instance expire.
struct Heartbeats(tokio::task::JoinHandle<()>);

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A browser test's overall bound: Chromium's start plus a few [`DEADLINE`]s.
const TEST_DEADLINE: Duration = Duration::from_secs(180);

fn heartbeat_loop(
    url: String,
    token: Option<String>,
    alive: Arc<Mutex<Vec<String>>>,
) -> Heartbeats {
    Heartbeats(tokio::spawn(async move {
        let http = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < TEST_DEADLINE {
            let ids = alive.lock().unwrap().clone();
            for id in ids {
                let mut request = http.post(format!("{url}/rpc")).json(&json!({
                    "jsonrpc": "2.0", "method": "system.heartbeat",
                    "params": {"instanceId": id}, "id": 1
                }));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let _ = request.send().await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }))
}

/// The TTL of the one instance a test lets expire (`ttlMs` at registration); every other
/// instance lives by the server's default 30 s, so a stall of the loaded machine (Chromium
/// starting on two cores) cannot expire a bystander.
const SHORT_TTL_MS: u64 = 5000;

/// For tests that register instances and never heartbeat them: none expires within the test.
fn long_ttl() -> Config {
    Config {
        ttl: Duration::from_secs(600),
        ..Config::default()
    }
}

/// Workers, tasks in several states, a lease: the page shows the instances with the leader and
/// term, the task counts and the claimed task's assignee; when the leader stops heartbeating
/// it shows `instance.expired` in the feed and the new leader with a higher term.
///
/// Only w-1, the leader meant to expire, has a short TTL (3 s); it is heartbeated until the
/// page shows it leading. The others live by the default 30 s and are heartbeated throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_cluster_and_the_leader_moving_on_in_chromium() {
    let (url, _, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    let ids = ["w-1", "w-2", "w-3", "w-4"];
    for id in ids {
        let mut params = json!({"id": id, "roles": ["worker"]});
        if id == "w-1" {
            params["ttlMs"] = json!(SHORT_TTL_MS);
        }
        rpc(&url, None, "system.register", params).await;
    }
    let alive = Arc::new(Mutex::new(ids.map(String::from).to_vec()));
    let _beats = heartbeat_loop(url.clone(), None, alive.clone());
    for n in 0..3 {
        rpc(
            &url,
            None,
            "task.create",
            json!({"text": format!("job {n}")}),
        )
        .await;
    }
    let claim = rpc(&url, None, "task.claim", json!({"workerId": "w-2"})).await;
    let claimed_task = claim["taskId"].as_str().unwrap().to_string();
    let claim_token = claim["claimToken"].as_str().unwrap().to_string();
    rpc(
        &url,
        None,
        "lease.acquire",
        json!({"key": "deploy/prod", "holder": "w-3", "ttlSec": 60}),
    )
    .await;

    let browser = Browser::start(1280, 900).await;
    browser.client.goto(&format!("{url}/")).await.unwrap();
    let term = browser
        .until(
            "four instances, w-1 leading, 2 pending and 1 claimed by w-2",
            |look| {
                let rows = look["rows"].as_array()?;
                let shown: Vec<_> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
                let leader_row = rows.iter().find(|r| r["leader"] == true)?;
                let claimed = look["claimedRows"].as_array()?;
                (shown == ids
                    && leader_row["id"] == "w-1"
                    && leader_row["text"].as_str()?.contains("★ leader")
                    && rows.iter().all(|r| {
                        r["state"] == "active"
                            && r["text"].as_str().is_some_and(|t| t.contains("● active"))
                    })
                    && look["leader"] == "w-1"
                    && look["pending"] == "2"
                    && look["claimed"] == "1"
                    && claimed.len() == 1
                    && claimed[0]["task"] == claimed_task.as_str()
                    && claimed[0]["assignee"] == "w-2"
                    && look["leases"] == json!(["deploy/prod"])
                    && look["feedState"] == "live")
                    .then(|| look["term"].as_str()?.parse::<u64>().ok())
                    .flatten()
            },
        )
        .await;

    // The leader stops heartbeating: after its TTL (3 s) it expires and w-2 takes over.
    alive.lock().unwrap().retain(|id| id != "w-1");
    let look = browser
        .until(
            "w-1 expired in the feed, w-2 leading with a higher term",
            |look| {
                let new_term: u64 = look["term"].as_str()?.parse().ok()?;
                let expired = look["events"].as_array()?.iter().any(|e| {
                    e["type"] == "instance.expired"
                        && e["text"].as_str().is_some_and(|t| t.contains("w-1"))
                });
                let leader_row = look["rows"]
                    .as_array()?
                    .iter()
                    .find(|r| r["leader"] == true)?;
                (expired && look["leader"] == "w-2" && leader_row["id"] == "w-2" && new_term > term)
                    .then(|| look.clone())
            },
        )
        .await;
    assert!(
        look["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "leader.elected"),
        "{:#}",
        look["events"]
    );
    // What the browser received never held the claim token (and did hold the claim).
    let received = format!("{}{}{}", look["body"], look["answers"], look["frames"]);
    assert!(
        received.contains(&claimed_task),
        "the capture is empty: {received}"
    );
    assert!(
        !received.contains(&claim_token),
        "the page received a claim token"
    );
    browser.close().await;
}

/// With `--token`: the page asks for it in a form, keeps it in sessionStorage (never the URL),
/// sends it on every call — the feed too, over the WebSocket subprotocol — and no claim token
/// reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_never_sees_a_claim_token() {
    const TOKEN: &str = "page-test-operator-token";
    let server = ServerConfig {
        token: Some(TOKEN.into()),
        ..ServerConfig::default()
    };
    let (url, _, _stop) = crate::common::serve(Config::default(), server).await;
    let t = Some(TOKEN);
    rpc(
        &url,
        t,
        "system.register",
        json!({"id": "w-1", "roles": ["worker"]}),
    )
    .await;
    let alive = Arc::new(Mutex::new(vec!["w-1".to_string()]));
    let _beats = heartbeat_loop(url.clone(), Some(TOKEN.into()), alive.clone());
    rpc(
        &url,
        t,
        "task.create",
        json!({"text": "secret work", "requiresLocks": ["repo/a"]}),
    )
    .await;
    let claim = rpc(&url, t, "task.claim", json!({"workerId": "w-1"})).await;
    let claim_token = claim["claimToken"].as_str().unwrap().to_string();
    let task = claim["taskId"].as_str().unwrap().to_string();

    let browser = Browser::start(1280, 900).await;
    browser.client.goto(&format!("{url}/")).await.unwrap();
    browser
        .until("the token form", |look| {
            (look["tokenForm"] == true && look["rows"] == json!([])).then_some(())
        })
        .await;
    let input = browser
        .client
        .find(fantoccini::Locator::Css(r#"[data-testid="token-input"]"#))
        .await
        .unwrap();
    input.send_keys(TOKEN).await.unwrap();
    browser
        .client
        .find(fantoccini::Locator::Css(r#"[data-testid="token-submit"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the data, and the feed live", |look| {
            (look["tokenForm"] == false
                && look["rows"][0]["id"] == "w-1"
                && look["claimedRows"][0]["task"] == task.as_str()
                && look["feedState"] == "live")
                .then_some(())
        })
        .await;
    // An event pushed over the token-opened WebSocket reaches the feed.
    rpc(
        &url,
        t,
        "system.register",
        json!({"id": "w-2", "roles": []}),
    )
    .await;
    alive.lock().unwrap().push("w-2".into());
    let look = browser
        .until("w-2's registration in the feed", |look| {
            look["events"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["type"] == "instance.registered"
                        && e["text"].as_str().is_some_and(|t| t.contains("w-2"))
                })
                .then(|| look.clone())
        })
        .await;
    assert_eq!(look["stored"], TOKEN);
    assert!(
        !look["href"].as_str().unwrap().contains(TOKEN),
        "{}",
        look["href"]
    );
    let received = format!("{}{}{}", look["body"], look["answers"], look["frames"]);
    assert!(received.contains(&task), "the capture is empty: {received}");
    assert!(
        !received.contains(&claim_token),
        "the page received a claim token"
    );
    assert!(
        !look["body"].as_str().unwrap().contains(TOKEN),
        "the page shows the bearer token"
    );
    browser.close().await;
}

/// With many instances the DOM holds one page of 50 rows and walks the id cursor; the sort
/// headers are buttons; the filter works on the page; the event feed keeps at most 300 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_holds_one_page_of_rows_and_a_bounded_feed() {
    // Nobody heartbeats here: a TTL longer than the test, so no instance expires mid-way.
    let (url, _, _stop) = crate::common::serve(long_ttl(), ServerConfig::default()).await;
    rpc(
        &url,
        None,
        "system.register",
        json!({"id": "i-000", "roles": []}),
    )
    .await;
    let browser = Browser::start(1280, 900).await;
    browser.client.goto(&format!("{url}/")).await.unwrap();
    browser
        .until("the feed live", |look| {
            (look["feedState"] == "live").then_some(())
        })
        .await;
    // 349 more registrations in one batch: 349 events pushed to the page.
    let batch: Vec<Value> = (1..350)
        .map(|n| json!({"jsonrpc": "2.0", "method": "system.register", "params": {"id": format!("i-{n:03}"), "roles": []}, "id": n}))
        .collect();
    let answers: Vec<Value> = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answers.iter().all(|a| a["result"]["registered"] == true));
    let ids = |look: &Value| -> Vec<String> {
        look["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let look = browser
        .until("50 rows of 350, the feed bounded", |look| {
            let events = look["events"].as_array()?.len();
            (look["rows"].as_array()?.len() == 50
                && events >= 290
                && look["body"].as_str()?.contains("of 350"))
            .then(|| look.clone())
        })
        .await;
    assert!(look["events"].as_array().unwrap().len() <= 300);
    assert_eq!(ids(&look)[0], "i-000");
    assert_eq!(ids(&look)[49], "i-049");
    let click = |testid: &'static str| {
        let client = browser.client.clone();
        async move {
            client
                .find(fantoccini::Locator::Css(&format!(
                    "[data-testid=\"{testid}\"]"
                )))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    click("next-page").await;
    browser
        .until("the second page", |look| {
            let ids = ids(look);
            (ids.len() == 50 && ids[0] == "i-050" && ids[49] == "i-099").then_some(())
        })
        .await;
    // Paging while a refresh is in flight: every drawn page's label matches its rows (recorded
    // by an observer at each draw); a double click pushes no duplicate cursor.
    browser
        .client
        .execute(
            r#"window.drawn = [];
            new MutationObserver(() => {
              const r = document.querySelector('[data-testid="instance-row"]');
              window.drawn.push([document.getElementById("page-label").textContent, r ? r.dataset.id : null]);
            }).observe(document.getElementById("instances").tBodies[0], {childList: true});"#,
            vec![],
        )
        .await
        .unwrap();
    for (script, page, first) in [
        // next then previous at once: the answer for page 3 must not be drawn as page 2
        ("next-page prev-page", 2, "i-050"),
        // next twice at once: page 3, not page 4 with page 3's rows
        ("next-page next-page", 3, "i-100"),
        ("prev-page", 2, "i-050"),
    ] {
        let before = browser.look().await.unwrap()["batches"].as_u64().unwrap();
        let clicks: Vec<Value> = script.split(' ').map(|id| json!(id)).collect();
        browser
            .client
            .execute(
                r#"for (const id of arguments) document.querySelector(`[data-testid="${id}"]`).click();"#,
                clicks,
            )
            .await
            .unwrap();
        // Three more answers: the one in flight at the click (if any), and two after it.
        let label = format!("page {page}: ");
        browser
            .until(&format!("{script}: page {page} from {first}"), |look| {
                let ids = ids(look);
                (look["batches"].as_u64()? >= before + 3
                    && look["pageLabel"].as_str()?.starts_with(&label)
                    && ids.first().map(String::as_str) == Some(first))
                .then_some(())
            })
            .await;
        let drawn = browser
            .client
            .execute("return window.drawn;", vec![])
            .await
            .unwrap();
        for pair in drawn.as_array().unwrap() {
            // "page N: a–b of 350" shows rows from i-(a-1).
            let label = pair[0].as_str().unwrap();
            let a: usize = label
                .split_once(": ")
                .and_then(|(_, rest)| rest.split('–').next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{script}: label {label:?}"));
            assert_eq!(
                pair[1].as_str().unwrap(),
                format!("i-{:03}", a - 1),
                "{script}: {label:?} drawn over other rows; all draws: {drawn}"
            );
        }
    }
    // The id header is a button: a click sorts the page descending.
    browser
        .client
        .find(fantoccini::Locator::Css(r#"th button[data-sort="id"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the page sorted by id, descending", |look| {
            let ids = ids(look);
            (ids.len() == 50 && ids[0] == "i-099" && ids[49] == "i-050").then_some(())
        })
        .await;
    browser
        .client
        .find(fantoccini::Locator::Css(r#"[data-testid="filter"]"#))
        .await
        .unwrap()
        .send_keys("7")
        .await
        .unwrap();
    browser
        .until("the filter keeping the 14 ids with a 7", |look| {
            let ids = ids(look);
            (ids.len() == 14 && ids[0] == "i-097" && ids.iter().all(|id| id.contains('7')))
                .then_some(())
        })
        .await;
    click("first-page").await;
    browser
        .until("the first page again, still filtered and sorted", |look| {
            let ids = ids(look);
            (ids == ["i-047", "i-037", "i-027", "i-017", "i-007"]).then_some(())
        })
        .await;

    // Pause holds new events back (and says so); resume shows them.
    click("pause").await;
    browser
        .until("the feed paused", |look| {
            (look["feedState"] == "paused").then_some(())
        })
        .await;
    rpc(
        &url,
        None,
        "system.register",
        json!({"id": "z-1", "roles": []}),
    )
    .await;
    let look = browser
        .until("one event held", |look| {
            (look["feedState"] == "paused, 1 held").then(|| look.clone())
        })
        .await;
    let shows_z1 = |look: &Value| {
        look["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"].as_str().unwrap().contains("z-1"))
    };
    assert!(!shows_z1(&look), "a paused feed showed a new event");
    click("pause").await;
    browser
        .until("the held event after resuming", |look| {
            shows_z1(look).then_some(())
        })
        .await;
    // A long pause: 400 events while paused. The page holds the newest 300 and says how many
    // it dropped; the ids it remembers to skip duplicates stay bounded by the feed plus the
    // held events.
    click("pause").await;
    browser
        .until("the feed paused again", |look| {
            (look["feedState"] == "paused").then_some(())
        })
        .await;
    let batch: Vec<Value> = (0..400)
        .map(|n| json!({"jsonrpc": "2.0", "method": "system.register", "params": {"id": format!("p-{n:03}"), "roles": []}, "id": n}))
        .collect();
    reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let look = browser
        .until("300 held, 100 dropped", |look| {
            (look["feedState"] == "paused, 300 held, 100 dropped").then(|| look.clone())
        })
        .await;
    let memory = &look["memory"];
    assert_eq!(memory["held"], 300, "{memory}");
    assert!(memory["seen"].as_u64().unwrap() <= 600, "{memory}");
    click("pause").await;
    let look = browser
        .until("p-399 after resuming", |look| {
            look["events"]
                .as_array()?
                .iter()
                .any(|e| e["text"].as_str().is_some_and(|t| t.contains("p-399")))
                .then(|| look.clone())
        })
        .await;
    let memory = &look["memory"];
    assert_eq!(memory["held"], 0, "{memory}");
    assert!(memory["feed"].as_u64().unwrap() <= 300, "{memory}");
    assert!(memory["seen"].as_u64().unwrap() <= 300, "{memory}");
    // The type filter shows one type only.
    rpc(
        &url,
        None,
        "system.unregister",
        json!({"instanceId": "z-1"}),
    )
    .await;
    browser
        .until("z-1's unregistration", |look| {
            look["events"]
                .as_array()?
                .iter()
                .any(|e| e["type"] == "instance.unregistered")
                .then_some(())
        })
        .await;
    click_css(
        &browser,
        r#"[data-testid="event-type"] option[value="instance.unregistered"]"#,
    )
    .await;
    browser
        .until("only the instance.unregistered event", |look| {
            let events = look["events"].as_array()?;
            (events.len() == 1 && events[0]["type"] == "instance.unregistered").then_some(())
        })
        .await;
    browser.close().await;
}

async fn click_css(browser: &Browser, css: &str) {
    browser
        .client
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Nested in an application's own axum router under `/vigil` (`server::router`), the page at
/// `/vigil` carries `<base href="/vigil/">`, loads its assets and talks to `/vigil/rpc` and
/// `/vigil/ws`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_nested_under_a_prefix() {
    let coordinator = vigil::Coordinator::start(long_ttl()).await.unwrap();
    let vigil = vigil::server::router(coordinator, &ServerConfig::default()).unwrap();
    let app = axum::Router::new().nest("/vigil", vigil);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    rpc(
        &format!("{url}/vigil"),
        None,
        "system.register",
        json!({"id": "nested-1", "roles": []}),
    )
    .await;
    let page = reqwest::get(format!("{url}/vigil"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<base href="/vigil/">"#), "{page}");
    let browser = Browser::start(1280, 900).await;
    browser.client.goto(&format!("{url}/vigil")).await.unwrap();
    browser
        .until("nested-1 and a live feed", |look| {
            (look["rows"][0]["id"] == "nested-1" && look["feedState"] == "live").then_some(())
        })
        .await;
    browser.close().await;
    server.abort();
}

/// Writes `docs/img/ui.png` (1280 × 1500) and `docs/img/ui-narrow.png` (420 px wide): a few
/// dozen workers (some suspect, some expired), tasks in every state, two leases. Run with
/// `cargo nextest run --all-features --run-ignored only -E 'test(ui_screenshot)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/img/ui.png; run on purpose"]
async fn ui_screenshot() {
    let config = Config {
        ttl: Duration::from_secs(30),
        grace: Duration::from_secs(5),
        ..Config::default()
    };
    let (url, _, _stop) = crate::common::serve(config, ServerConfig::default()).await;
    let mut alive = Vec::new();
    for n in 1..=36 {
        let id = format!("worker-{n:02}");
        let roles = if n % 6 == 0 {
            json!(["worker", "gpu"])
        } else {
            json!(["worker"])
        };
        // Most beat; a few were silent for a while (suspect soon) or have a 1 s TTL (expired).
        let ttl = match n % 9 {
            4 => 26_000,
            7 => 1_000,
            _ => 30_000,
        };
        rpc(
            &url,
            None,
            "system.register",
            json!({"id": id, "roles": roles, "ttlMs": ttl}),
        )
        .await;
        if n % 9 != 4 && n % 9 != 7 {
            alive.push(id);
        }
    }
    let alive = Arc::new(Mutex::new(alive));
    let _beats = heartbeat_loop(url.clone(), None, alive);
    for n in 0..14 {
        let locks = if n < 2 {
            json!([format!("repo/{n}")])
        } else {
            json!([])
        };
        rpc(
            &url,
            None,
            "task.create",
            json!({"text": format!("build #{n}"), "maxAttempts": 1, "requiresLocks": locks}),
        )
        .await;
    }
    let mut claims = Vec::new();
    for w in [
        "worker-01",
        "worker-02",
        "worker-03",
        "worker-05",
        "worker-06",
        "worker-08",
    ] {
        claims.push(rpc(&url, None, "task.claim", json!({"workerId": w})).await);
    }
    for (claim, how) in claims.iter().zip(["complete", "complete", "fail"]) {
        let params = json!({"taskId": claim["taskId"], "claimToken": claim["claimToken"], "error": "exit status 2: tests failed"});
        rpc(&url, None, &format!("task.{how}"), params).await;
    }
    rpc(
        &url,
        None,
        "lease.acquire",
        json!({"key": "deploy/prod", "holder": "worker-10", "ttlSec": 300}),
    )
    .await;
    // 1280 px wide, tall enough for the whole page.
    let browser = Browser::start(1280, 1500).await;
    browser.client.goto(&format!("{url}/")).await.unwrap();
    // Long enough for a few chart points and for the short-TTL workers to expire.
    tokio::time::sleep(Duration::from_secs(22)).await;
    browser
        .until("36 rows", |look| {
            (look["rows"].as_array()?.len() >= 30).then_some(())
        })
        .await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ui.png"),
        browser.client.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(
        dir.join("ui-narrow.png"),
        browser.client.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.close().await;
}

/// `vigil serve --ui false`, `VIGIL_UI=false` and `ui = false` in the config file each turn the
/// page off; without them the binary serves it.
#[cfg(feature = "cli")]
#[tokio::test]
async fn the_binary_turns_the_page_off_by_flag_environment_or_file() {
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = std::env::temp_dir().join(format!("vigil-ui-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vigil.toml");
    std::fs::write(&file, "ui = false\n").unwrap();
    let file = file.to_str().unwrap().to_string();
    for (what, args, env, status) in [
        ("the default", vec![], None, 200),
        ("--ui false", vec!["--ui", "false"], None, 404),
        ("VIGIL_UI=false", vec![], Some("false"), 404),
        (
            "ui = false in the file",
            vec!["--config", file.as_str()],
            None,
            404,
        ),
    ] {
        // Port 0, and the address read from the startup line: no free port to guess.
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("VIGIL_UI")
            .env_remove("VIGIL_LOG_FORMAT")
            .env("VIGIL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(value) = env {
            command.env("VIGIL_UI", value);
        }
        let mut child = Kill(command.spawn().unwrap());
        let stderr = child.0.stderr.take().unwrap();
        let (found, address) = std::sync::mpsc::channel();
        // Reads the log to its end (so the pipe never fills), passing on the served address.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some((_, rest)) = line.split_once("serving http://") {
                    let addr = rest.split_whitespace().next().unwrap_or("");
                    let _ = found.send(addr.trim_end_matches(':').to_string());
                }
            }
        });
        let addr =
            tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap()
                .unwrap_or_else(|e| {
                    panic!("{what}: no startup line from vigil serve in 10 s: {e}")
                });
        let answer = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{what}");
        let text = answer.text().await.unwrap();
        if status == 404 {
            assert!(text.contains("status page is off"), "{what}: {text}");
        } else {
            assert!(text.contains("<title>Vigil</title>"), "{what}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
