//! `vigil status`: asks a running coordinator for `system.get_state` and prints it as aligned
//! tables.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Fetches the state from `target` and renders it.
pub async fn run(target: &str, token: Option<&str>, limit: usize) -> Result<String, String> {
    let url = format!("{}/rpc", target.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&url).json(&json!({
        "jsonrpc": "2.0", "method": "system.get_state", "params": {"limit": limit}, "id": 1
    }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered HTTP {}", response.status()));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{url} sent something that is not JSON: {e}"))?;
    if let Some(error) = body.get("error") {
        return Err(format!("{url} answered an error: {error}"));
    }
    Ok(render(&body["result"]))
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    let ms = now_ms.saturating_sub(then_ms);
    match ms {
        0..1_000 => format!("{ms}ms ago"),
        1_000..120_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        _ => format!("{}m ago", ms / 60_000),
    }
}

/// Renders a `system.get_state` result.
pub fn render(state: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut rows = vec![[
        "ID".to_string(),
        "ROLES".into(),
        "STATE".into(),
        "LAST SEEN".into(),
        "EPOCH".into(),
        "LEADER".into(),
    ]];
    for i in state["instances"].as_array().into_iter().flatten() {
        let roles: Vec<&str> = i["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push([
            i["id"].as_str().unwrap_or("?").to_string(),
            roles.join(","),
            i["status"].as_str().unwrap_or("?").to_string(),
            ago(now, i["lastSeenMs"].as_u64().unwrap_or(0)),
            i["epoch"].to_string(),
            if i["isLeader"] == true {
                "*".into()
            } else {
                String::new()
            },
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let count = state["instanceCount"].as_u64().unwrap_or(0);
    let shown = rows.len() - 1;
    if (shown as u64) < count {
        out.push_str(&format!("({shown} of {count} instances shown)\n"));
    }
    let leader = state["leader"].as_str().unwrap_or("none");
    out.push_str(&format!("\nleader: {leader}  term: {}\n", state["term"]));
    let t = &state["tasks"];
    out.push_str(&format!(
        "tasks:  pending {}  claimed {}  completed {}  failed {}\n",
        t["pending"], t["claimed"], t["completed"], t["failed"]
    ));
    out
}
