//! `vigil mcp`: an MCP server over stdio, one per agent process, forwarding every tool to a
//! running `vigil serve` over JSON-RPC (`POST /rpc`). stdout carries the protocol only; logs go
//! to stderr.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::client::{Client, ClientError};
use crate::mcp::{Backend, Fallbacks, VigilMcp};
use crate::rpc::{Principal, RpcError};

/// `vigil mcp` arguments.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The coordinator's base URL, or several separated by commas (`vigil serve --ha`: calls
    /// go to the active one, following a standby's redirect).
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
    target: String,
    /// Bearer token, if the server requires one: every tool acts as its principal.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Time allowed per call to the coordinator.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// The remote backend: JSON-RPC calls to `target` through the worker client, connected at the
/// first call (so the agent host can start this before the coordinator is up).
pub struct RemoteBackend {
    target: String,
    token: Option<String>,
    timeout: Duration,
    client: OnceCell<Client>,
}

impl RemoteBackend {
    /// Calls will go to `target` with `token`.
    pub fn new(target: impl Into<String>, token: Option<String>, timeout: Duration) -> Self {
        Self {
            target: target.into(),
            token,
            timeout,
            client: OnceCell::new(),
        }
    }
}

/// The URLs of a `--target` list (each checked when the client connects).
fn target_list(target: &str) -> Vec<String> {
    crate::client::transport::parse_targets(target).unwrap_or_else(|_| vec![target.to_string()])
}

fn from_client(e: ClientError) -> RpcError {
    match e {
        ClientError::Rpc {
            code,
            message,
            data,
        } => RpcError {
            code,
            message,
            data,
        },
        // The client's words name the target and what to fix.
        other => RpcError::new(other.code(), other.to_string()),
    }
}

impl Backend for RemoteBackend {
    async fn call(
        &self,
        method: &str,
        params: Value,
        _principal: Option<&Principal>,
    ) -> Result<Value, RpcError> {
        let client = self
            .client
            .get_or_try_init(|| {
                Client::builder()
                    .urls(target_list(&self.target))
                    .token_opt(self.token.clone())
                    .timeout(self.timeout)
                    .connect()
            })
            .await
            .map_err(from_client)?;
        client.call(method, params).await.map_err(from_client)
    }
}

impl McpArgs {
    /// Serves MCP on stdin/stdout until stdin closes.
    pub async fn run(self) -> ExitCode {
        // A target that can never work is refused now; one that is merely down is reported
        // by each tool call (the agent host may start this before the coordinator).
        if let Err(e) = crate::client::transport::parse_targets(&self.target) {
            eprintln!("vigil mcp: {e} (--target)");
            return ExitCode::from(super::USAGE);
        }
        let backend = RemoteBackend::new(self.target.clone(), self.token, self.timeout);
        let server = VigilMcp::new(backend, Fallbacks::from_env());
        tracing::info!(target = %self.target, "vigil mcp: serving MCP on stdio");
        match crate::mcp::serve_stdio(server).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil mcp: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool call through a proxy whose target is down says so in the client's words.
    #[tokio::test]
    async fn a_target_that_is_down_is_named_with_the_fix() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = format!("http://{addr}");
        let backend = RemoteBackend::new(target.clone(), None, Duration::from_secs(2));
        let error = backend
            .call("system.health", serde_json::json!({}), None)
            .await
            .unwrap_err();
        assert_eq!(
            error.message,
            format!("nothing listens at {target}: is `vigil serve` running there? (--target)")
        );
    }

    /// `--target standby,active`: tool calls reach the active, which the standby names.
    #[tokio::test]
    async fn a_target_list_reaches_the_active_past_a_standby() {
        let coordinator = crate::Coordinator::start(crate::Config::default())
            .await
            .unwrap();
        let server = crate::server::Server::bind(
            coordinator.clone(),
            &crate::server::ServerConfig {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let active = format!("http://{}", server.local_addr().unwrap());
        tokio::spawn(server.run(std::future::pending()));
        // A test-only standby answering the contract: −32008 naming the active.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let standby = format!("http://{}", listener.local_addr().unwrap());
        let named = active.clone();
        let app = axum::Router::new().route(
            "/rpc",
            axum::routing::post(move |body: axum::body::Bytes| {
                let named = named.clone();
                async move {
                    let request: Value = serde_json::from_slice(&body).unwrap();
                    axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": request["id"],
                        "error": {"code": -32008, "message": "not the active coordinator",
                                  "data": {"role": "standby", "active": named, "epoch": 2}}}))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let backend =
            RemoteBackend::new(format!("{standby},{active}"), None, Duration::from_secs(5));
        let health = backend
            .call("system.health", serde_json::json!({}), None)
            .await
            .unwrap();
        assert!(
            health.pointer("/services/coordinator").is_some(),
            "{health}"
        );
        assert_eq!(backend.client.get().map(Client::current_url), Some(active));
        coordinator.shutdown().await;
    }
}
