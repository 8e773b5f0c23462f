//! `vigil status`: asks a running coordinator for `system.health` and `system.get_state` and
//! prints, in this order, the server (version, uptime, listen address), the store (kind, state,
//! pending writes), the leader and term, the instances in natural order (`w-2` before `w-10`)
//! with the leader always among them, and the task counts — or, with `--json`, one JSON
//! document. The exit status says whether the cluster is healthy (see [`Problems`]).

use std::cmp::Ordering;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};

/// Exit status when the cluster or its store is degraded (0: healthy, 1: the server could
/// not be asked, 2: a usage error, as for every `vigil` command).
pub const DEGRADED: u8 = 3;

/// Most instances read to sort them naturally; beyond it the first ones in id order are
/// sorted (and the output says so).
const MAX_SCAN: usize = 10_000;

/// Instances asked per `system.get_state` page (the server's most).
const PAGE: usize = 1000;

/// `vigil status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The coordinator's base URL, or several separated by commas (`vigil serve --ha`: the
    /// status is the active one's, found by following a standby's redirect).
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
    target: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Most instances to list (the leader is shown besides them when they leave it out).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print one JSON document (fields in docs/api.md, "vigil status --json") instead of
    /// the tables.
    #[arg(long)]
    json: bool,
    /// How long each call may wait for its answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

impl StatusArgs {
    /// Prints the status; exit 0 when healthy, [`DEGRADED`] when not, 1 when the server
    /// could not be asked.
    pub async fn run(self) -> ExitCode {
        match fetch(
            &self.target,
            self.token.as_deref(),
            self.limit,
            self.timeout,
        )
        .await
        {
            Ok(status) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).unwrap_or_default()
                    );
                } else {
                    print!("{}", render(&status, now_ms()));
                }
                if status.healthy {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(DEGRADED)
                }
            }
            Err(e) => {
                eprintln!("vigil status: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The server itself.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerInfo {
    version: Option<String>,
    uptime_ms: Option<u64>,
    listen: Option<String>,
}

/// The store.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreInfo {
    /// `memory` or `redis`.
    kind: String,
    /// `ok`, `failing`, `half-open` or `open`.
    state: String,
    pending_writes: u64,
    pending_events: u64,
}

/// One URL of the `--target` list and its role as its `/healthz` tells it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CoordinatorRole {
    url: String,
    /// `active` (HTTP 200), `standby` (HTTP 429), `unreachable`, or `HTTP <status>`.
    role: String,
    /// The coordinator epoch it reports, if any.
    epoch: Option<u64>,
}

/// The role of each of `urls` from its `/healthz`, all asked at once, each bounded by
/// `timeout`.
async fn roles(
    urls: &[String],
    token: Option<&str>,
    timeout: std::time::Duration,
) -> Vec<CoordinatorRole> {
    use crate::client::transport::{HttpPool, bearer};
    let ask = |url: String| async move {
        let answer = match HttpPool::new(&url, bearer(token)) {
            Ok(pool) => {
                tokio::time::timeout(timeout, pool.with_connect_timeout(timeout).get("/healthz"))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let (role, epoch) = match answer {
            None => ("unreachable".to_string(), None),
            Some((status, body)) => {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let role = match status {
                    200 => "active".to_string(),
                    429 => "standby".to_string(),
                    other => format!("HTTP {other}"),
                };
                (role, body["epoch"].as_u64())
            }
        };
        CoordinatorRole { url, role, epoch }
    };
    futures_util::future::join_all(urls.iter().cloned().map(ask)).await
}

/// One instance row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    roles: Vec<String>,
    /// `active`, `suspect`, `expired`, `unregistered`.
    state: String,
    /// RFC 3339.
    last_seen: String,
    last_seen_ms: u64,
    epoch: u64,
    is_leader: bool,
}

impl Row {
    fn of(i: &Value) -> Self {
        let last_seen_ms = i["lastSeenMs"].as_u64().unwrap_or(0);
        Row {
            id: i["id"].as_str().unwrap_or("?").to_string(),
            roles: i["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            // Vigil's liveness (`status` holds ClaudeBench's name for it).
            state: i["state"]
                .as_str()
                .or(i["status"].as_str())
                .unwrap_or("?")
                .to_string(),
            last_seen: crate::clock::iso_ms(last_seen_ms),
            last_seen_ms,
            epoch: i["epoch"].as_u64().unwrap_or(0),
            is_leader: i["isLeader"] == true,
        }
    }

    fn alive(&self) -> bool {
        matches!(self.state.as_str(), "active" | "suspect")
    }
}

/// Instances that left, counted from the server's recent events (shown when none is live).
#[derive(Debug, Default, Serialize)]
struct Departed {
    expired: usize,
    unregistered: usize,
    /// When the last of them left, RFC 3339.
    #[serde(rename = "lastAt")]
    last_at: Option<String>,
}

/// What `vigil status` shows, and `--json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    target: String,
    /// The base URL that answered: the active coordinator when `target` lists several, or
    /// names a standby.
    answered_by: String,
    /// With several URLs in `target`: each one's role, from its `/healthz`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    coordinators: Vec<CoordinatorRole>,
    server: ServerInfo,
    store: StoreInfo,
    leader: Option<String>,
    term: u64,
    /// Whether the leader is a live (active or suspect) instance.
    leader_alive: bool,
    /// Registered instances (live, and those between expiry and removal).
    instance_count: u64,
    instance_states: Value,
    /// At most `--limit` in natural id order, plus the leader when they leave it out.
    instances: Vec<Row>,
    /// Whether the natural order covers only the first [`MAX_SCAN`] ids in text order.
    partial_order: bool,
    /// With no live instance: those that left, from the recent events.
    departed: Departed,
    tasks: Value,
    /// No problem found: exit 0.
    healthy: bool,
    /// Why the cluster is degraded (exit [`DEGRADED`]).
    problems: Vec<String>,
}

/// Compares ids as people read them: runs of digits by their value, so `w-2` comes before
/// `w-10`; the rest as text. Ties (`w-01`, `w-1`) fall back to the plain text order, so the
/// order is total.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (m, n) = (run(x), run(y));
                let strip = |d: &[u8]| {
                    let zeros = d.iter().take_while(|&&c| c == b'0').count();
                    d[zeros..].to_vec()
                };
                let (dx, dy) = (strip(&x[..m]), strip(&y[..n]));
                let by_value = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(&dy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                x = &x[m..];
                y = &y[n..];
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// The problems that make the status non-zero, precisely:
///
/// * the store is not `ok` — `failing` (writes failing, retried), `half-open` (probing after
///   failures) or `open` (circuit open, writes refused with −32001): the pending writes are
///   stuck until it recovers;
/// * at least one instance is live (active or suspect) and there is no live leader (none is
///   named, or the one named is not a live instance — an election waiting for the store).
struct Problems;

impl Problems {
    fn of(store: &StoreInfo, live: u64, leader: Option<&str>, leader_alive: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let pending = format!(
            "{} writes and {} events pending",
            store.pending_writes, store.pending_events
        );
        match store.state.as_str() {
            "ok" => {}
            "failing" => problems.push(format!(
                "the store is failing: writes fail and are retried; {pending}"
            )),
            "half-open" => problems.push(format!(
                "the store is being probed after failures; {pending}"
            )),
            "open" => problems.push(format!(
                "the store's circuit is open: writes are refused (-32001) until it answers; \
                 {pending}"
            )),
            other => problems.push(format!("the store is {other}; {pending}")),
        }
        if live > 0 && !leader_alive {
            problems.push(match leader {
                Some(l) => {
                    format!("no live leader: {l} is named but not live, while {live} instances are")
                }
                None => format!("no leader while {live} instances are live"),
            });
        }
        problems
    }
}

/// Asks `target` and gathers the status.
async fn fetch(
    target: &str,
    token: Option<&str>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Status, ClientError> {
    let (client, health) = super::reach(target, token, timeout).await?;
    let urls = crate::client::transport::parse_targets(target).unwrap_or_default();
    let coordinators = if urls.len() > 1 {
        roles(&urls, token, timeout.min(std::time::Duration::from_secs(2))).await
    } else {
        Vec::new()
    };
    let services = &health["services"];
    let store = StoreInfo {
        kind: services["store"].as_str().unwrap_or("?").to_string(),
        state: services["storeState"].as_str().unwrap_or("?").to_string(),
        pending_writes: services["pendingWrites"].as_u64().unwrap_or(0),
        pending_events: services["pendingEvents"].as_u64().unwrap_or(0),
    };
    let server = ServerInfo {
        version: health["version"].as_str().map(str::to_string),
        uptime_ms: health["uptimeMs"].as_u64(),
        listen: health["listen"].as_str().map(str::to_string),
    };
    // Every instance up to MAX_SCAN, page by page, to sort them naturally.
    let first = state_page(&client, None).await?;
    let mut found: Vec<Row> = Vec::new();
    let mut page = first.clone();
    loop {
        found.extend(
            page["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Row::of),
        );
        let next = page["nextAfter"].as_str().map(str::to_string);
        match next {
            Some(after) if page["truncated"] == true && found.len() < MAX_SCAN => {
                page = state_page(&client, Some(&after)).await?;
            }
            _ => break,
        }
    }
    let instance_count = first["instanceCount"]
        .as_u64()
        .unwrap_or(found.len() as u64);
    let partial_order = (found.len() as u64) < instance_count;
    found.sort_by(|a, b| natural_cmp(&a.id, &b.id));
    let leader = first["leader"].as_str().map(str::to_string);
    let mut leader_row = None;
    if let Some(l) = &leader {
        match found.iter().position(|r| &r.id == l) {
            Some(i) if i >= limit => leader_row = Some(found.remove(i)),
            Some(_) => {}
            None => {
                let one = client
                    .call(
                        "system.get_state",
                        json!({"instanceId": l, "taskLimit": 0, "limit": 1}),
                    )
                    .await?;
                leader_row = one["instances"]
                    .as_array()
                    .and_then(|a| a.first())
                    .map(Row::of);
            }
        }
    }
    found.truncate(limit);
    let mut instances = found;
    if let Some(row) = leader_row {
        // The leader goes in its natural place.
        let at = instances.partition_point(|r| natural_cmp(&r.id, &row.id) == Ordering::Less);
        instances.insert(at, row);
    }
    let leader_alive = leader.as_ref().is_some_and(|l| {
        instances
            .iter()
            .any(|r| &r.id == l && r.alive() && r.is_leader)
    });
    let states = &health["instanceStates"];
    let live = states["active"].as_u64().unwrap_or(0) + states["suspect"].as_u64().unwrap_or(0);
    let problems = Problems::of(&store, live, leader.as_deref(), leader_alive);
    let departed = if live == 0 {
        departed(&first["recentEvents"])
    } else {
        Departed::default()
    };
    Ok(Status {
        target: target.to_string(),
        answered_by: client.current_url(),
        coordinators,
        server,
        store,
        leader,
        term: first["term"].as_u64().unwrap_or(0),
        leader_alive,
        instance_count,
        instance_states: states.clone(),
        instances,
        partial_order,
        departed,
        tasks: first["taskCounts"].clone(),
        healthy: problems.is_empty(),
        problems,
    })
}

/// One page of `system.get_state`: instances after `after`, no tasks.
async fn state_page(client: &Client, after: Option<&str>) -> Result<Value, ClientError> {
    let mut params = json!({"limit": PAGE, "taskLimit": 0});
    if let Some(after) = after {
        params["after"] = json!(after);
    }
    client.call("system.get_state", params).await
}

/// The instances whose last `instance.*` event in `events` (oldest first) says they left.
fn departed(events: &Value) -> Departed {
    let mut last: std::collections::HashMap<&str, (&str, u64)> = Default::default();
    for e in events.as_array().into_iter().flatten() {
        let (Some(kind), Some(id)) = (e["type"].as_str(), e["instanceId"].as_str()) else {
            continue;
        };
        if kind.starts_with("instance.") {
            last.insert(id, (kind, e["atMs"].as_u64().unwrap_or(0)));
        }
    }
    let mut d = Departed::default();
    let mut latest = None;
    for (kind, at) in last.values() {
        match *kind {
            "instance.expired" => d.expired += 1,
            "instance.unregistered" => d.unregistered += 1,
            _ => continue,
        }
        latest = latest.max(Some(*at));
    }
    d.last_at = latest.map(crate::clock::iso_ms);
    d
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    let ms = now_ms.saturating_sub(then_ms);
    match ms {
        0..1_000 => format!("{ms}ms ago"),
        1_000..120_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        _ => format!("{}m ago", ms / 60_000),
    }
}

/// An uptime as `3d 4h`, `2h 05m`, `5m 12s`, `42s`.
fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {:02}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// The store's state in words.
fn store_state(state: &str) -> &str {
    match state {
        "ok" => "ok",
        "failing" => "degraded (writes failing)",
        "half-open" => "degraded (probing after failures)",
        "open" => "open (circuit open: writes refused)",
        other => other,
    }
}

/// Renders the status as text, `now_ms` being the wall clock now.
fn render(s: &Status, now_ms: u64) -> String {
    let mut out = String::new();
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    out.push_str(&format!(
        "vigil {} at {}, up {}\n",
        or_unknown(&s.server.version),
        s.server.listen.clone().unwrap_or_else(|| s.target.clone()),
        s.server.uptime_ms.map_or("?".into(), uptime)
    ));
    if s.answered_by != s.target {
        out.push_str(&format!(
            "active: {} answered (--target {})\n",
            s.answered_by, s.target
        ));
    }
    if !s.coordinators.is_empty() {
        let each: Vec<String> = s
            .coordinators
            .iter()
            .map(|c| match c.epoch {
                Some(e) => format!("{} {} (epoch {e})", c.url, c.role),
                None => format!("{} {}", c.url, c.role),
            })
            .collect();
        out.push_str(&format!("coordinators: {}\n", each.join(", ")));
    }
    out.push_str(&format!(
        "store: {}, {}, {} writes pending",
        s.store.kind,
        store_state(&s.store.state),
        s.store.pending_writes
    ));
    if s.store.pending_events > 0 {
        out.push_str(&format!(", {} events pending", s.store.pending_events));
    }
    out.push('\n');
    let leader = match (&s.leader, s.leader_alive) {
        (Some(l), true) => l.clone(),
        (Some(l), false) => format!("{l} (not live)"),
        (None, _) => "none".into(),
    };
    out.push_str(&format!("leader: {leader}  term: {}\n\n", s.term));
    if s.instances.is_empty() {
        let d = &s.departed;
        let when = d
            .last_at
            .as_deref()
            .map(|t| format!(" (the last at {t})"))
            .unwrap_or_default();
        out.push_str(&match (d.expired, d.unregistered) {
            (0, 0) => "no instances registered\n".to_string(),
            (n, 0) => format!("no live instances: all {n} instances expired{when}\n"),
            (0, n) => format!("no live instances: all {n} instances unregistered{when}\n"),
            (e, u) => format!("no live instances: {e} expired, {u} unregistered{when}\n"),
        });
    } else {
        if s.instances.iter().all(|r| !r.alive()) {
            out.push_str(&format!(
                "all {} instances expired\n",
                s.instance_count.max(s.instances.len() as u64)
            ));
        }
        let mut rows = vec![[
            "ID".to_string(),
            "ROLES".into(),
            "STATE".into(),
            "LAST SEEN".into(),
            "EPOCH".into(),
            "LEADER".into(),
        ]];
        for r in &s.instances {
            rows.push([
                r.id.clone(),
                r.roles.join(","),
                r.state.clone(),
                ago(now_ms, r.last_seen_ms),
                r.epoch.to_string(),
                if r.is_leader {
                    "*".into()
                } else {
                    String::new()
                },
            ]);
        }
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        let shown = s.instances.len() as u64;
        if shown < s.instance_count {
            let order = if s.partial_order {
                format!("; natural order among the first {MAX_SCAN} ids")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "({shown} of {} instances shown: --limit for more{order})\n",
                s.instance_count
            ));
        }
    }
    let t = &s.tasks;
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "\ntasks: pending {}  in_progress {}  completed {}  failed {}\n",
        n("pending"),
        n("in_progress"),
        n("completed"),
        n("failed")
    ));
    if !s.problems.is_empty() {
        out.push('\n');
        for p in &s.problems {
            out.push_str(&format!("DEGRADED: {p}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_naturally() {
        let mut ids = vec![
            "w-10", "w-2", "w-1", "a", "w-02", "w-100", "w-", "b1c2", "b1c10",
        ];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            [
                "a", "b1c2", "b1c10", "w-", "w-1", "w-02", "w-2", "w-10", "w-100"
            ]
        );
        // Digit runs longer than any integer still compare by value.
        assert_eq!(
            natural_cmp("x99999999999999999999999", "x100000000000000000000000"),
            Ordering::Less
        );
    }

    fn store(state: &str) -> StoreInfo {
        StoreInfo {
            kind: "redis".into(),
            state: state.into(),
            pending_writes: 153,
            pending_events: 0,
        }
    }

    #[test]
    fn problems_are_the_store_and_a_missing_leader() {
        assert!(Problems::of(&store("ok"), 3, Some("w-1"), true).is_empty());
        assert!(Problems::of(&store("ok"), 0, None, false).is_empty());
        let open = Problems::of(&store("open"), 3, Some("w-1"), true);
        assert!(open[0].contains("circuit is open") && open[0].contains("153 writes"));
        assert_eq!(Problems::of(&store("failing"), 0, None, false).len(), 1);
        let leaderless = Problems::of(&store("ok"), 2, None, false);
        assert!(leaderless[0].contains("no leader"), "{leaderless:?}");
        let gone = Problems::of(&store("ok"), 2, Some("w-9"), false);
        assert!(gone[0].contains("w-9"), "{gone:?}");
    }

    #[test]
    fn departures_are_read_from_the_events() {
        let events = json!([
            {"type": "instance.registered", "instanceId": "a", "atMs": 1},
            {"type": "instance.registered", "instanceId": "b", "atMs": 2},
            {"type": "instance.expired", "instanceId": "a", "atMs": 3},
            {"type": "instance.expired", "instanceId": "b", "atMs": 4},
            {"type": "leader.vacant", "instanceId": null, "atMs": 4},
        ]);
        let d = departed(&events);
        assert_eq!((d.expired, d.unregistered), (2, 0));
        assert_eq!(d.last_at.as_deref(), Some("1970-01-01T00:00:00.004Z"));
    }

    #[test]
    fn uptimes_read_well() {
        assert_eq!(uptime(42_000), "42s");
        assert_eq!(uptime(312_000), "5m 12s");
        assert_eq!(uptime(7_500_000), "2h 05m");
        assert_eq!(uptime(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }
}
