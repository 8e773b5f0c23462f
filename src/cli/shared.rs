//! What `vigil serve` and `vigil serve --ha` (`ha.rs`) share: the endpoints the startup line
//! names, and the log of events.

/// What the event logger receives: an event, or how many it missed.
#[derive(Debug, PartialEq)]
pub(super) enum Logged {
    Event(Box<crate::Event>),
    Missed(u64),
}

/// Hands every event of `events` to `log` until the bus closes. A logger that fell more than
/// the bus's capacity behind is told how many events it missed (`Lagged`) and goes on with the
/// oldest it still has: a burst never silences it for good.
pub(super) async fn relay_events(
    mut events: tokio::sync::broadcast::Receiver<crate::Event>,
    mut log: impl FnMut(Logged),
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => log(Logged::Event(Box::new(event))),
            Err(RecvError::Lagged(missed)) => log(Logged::Missed(missed)),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Every endpoint a server with `config` serves, as `METHOD /path`.
pub(super) fn endpoints(config: &crate::server::ServerConfig) -> Vec<&'static str> {
    let mut all = vec![
        "POST /rpc",
        "POST /rpc/batch",
        "GET /ws",
        "GET /ws/stats",
        "GET /metrics",
        "GET /healthz",
    ];
    if config.ui {
        // The status page (`--ui false` turns it off).
        all.push("GET /");
    }
    if config.mcp && cfg!(feature = "mcp") {
        all.push("POST /mcp");
    }
    all
}

/// One event as a log line: its type, then its fields, times in RFC 3339 (UTC).
fn event_line(e: &crate::Event) -> String {
    use crate::clock::iso_ms;
    use std::fmt::Write;
    let mut out = e.kind.as_str().to_string();
    let mut field = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, " {key}={value}");
    };
    if let Some(id) = &e.instance_id {
        field("instance", id);
    }
    if let Some(epoch) = e.epoch {
        field("epoch", &epoch);
    }
    field("term", &e.term);
    if let Some(previous) = &e.previous_leader {
        field("previous", previous);
    }
    if let Some(roles) = &e.roles {
        field("roles", &roles.join(","));
    }
    if let Some(task) = e.task_id {
        field("task", &task);
    }
    if let Some(brief) = &e.task {
        field("status", &brief.status.as_str());
        field(
            "attempts",
            &format!("{}/{}", brief.attempts, brief.max_attempts),
        );
    }
    if let Some(key) = &e.lease_key {
        field("lease", key);
    }
    if let Some(token) = e.fencing_token {
        field("fencing_token", &token);
    }
    if let Some(reason) = &e.reason {
        field("reason", &format!("{reason:?}"));
    }
    if let Some(seen) = e.last_seen_ms {
        field("last_seen", &iso_ms(seen));
    }
    field("at", &iso_ms(e.at_ms));
    out
}

/// Logs one event, once: the library logs its own transitions at debug level only.
pub(super) fn log_event(logged: Logged) {
    match logged {
        Logged::Event(event) => {
            tracing::info!(target: "vigil::events", seq = event.seq, "{}", event_line(&event));
        }
        Logged::Missed(missed) => {
            tracing::warn!(
                missed,
                "the event log fell behind: {missed} events were not logged"
            );
        }
    }
}
