//! `vigil status`: asks a running coordinator for `system.get_state` and prints it as aligned
//! tables.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// `vigil status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The coordinator's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
    target: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Most instances to list.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl StatusArgs {
    /// Prints the table, or the reason it could not be had.
    pub async fn run(self) -> std::process::ExitCode {
        match fetch(&self.target, self.token.as_deref(), self.limit).await {
            Ok(table) => {
                print!("{table}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil status: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Fetches the state from `target` through the worker client and renders it.
async fn fetch(target: &str, token: Option<&str>, limit: usize) -> Result<String, String> {
    use crate::client::{Client, ClientError};
    let explain = |e: ClientError| match e {
        ClientError::Transport(m) if m.starts_with("HTTP ") => format!("{target} answered {m}"),
        ClientError::Transport(_) => format!("cannot reach {target}: {e}"),
        ClientError::Rpc { .. } => format!("{target} answered an error: {e}"),
        other => other.to_string(),
    };
    let client = Client::builder()
        .url(target)
        .token_opt(token.map(str::to_string))
        .connect()
        .await
        .map_err(explain)?;
    let state = client
        .call("system.get_state", json!({"limit": limit}))
        .await
        .map_err(explain)?;
    Ok(render(&state))
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
            // Vigil's liveness (`status` holds ClaudeBench's name for it).
            i["state"]
                .as_str()
                .or(i["status"].as_str())
                .unwrap_or("?")
                .to_string(),
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
    let t = &state["taskCounts"];
    out.push_str(&format!(
        "tasks:  pending {}  in_progress {}  completed {}  failed {}\n",
        t["pending"], t["in_progress"], t["completed"], t["failed"]
    ));
    out
}
