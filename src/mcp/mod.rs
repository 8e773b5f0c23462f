//! MCP (Model Context Protocol): Sortie's step tools and Vigil's own, for LLM agents.
//!
//! [`VigilMcp`] is the tool router, an rmcp [`ServerHandler`]: every tool validates its
//! arguments, calls one or two JSON-RPC methods through a [`Backend`], and shapes the answer
//! (see `docs/mcp.md` for the tools). Two backends serve it:
//!
//! * [`DispatcherBackend`] — in process, the server's own [`Dispatcher`], acting for the
//!   principal of the caller's bearer token: `POST /mcp` on `vigil serve` ([`http_service`]);
//! * the remote one of `vigil mcp --target URL` (in the binary), which forwards each call to a
//!   running server's `POST /rpc` and serves MCP over stdio ([`serve_stdio`]).
//!
//! This module knows JSON-RPC methods and the MCP wire, nothing of the coordinator's insides:
//! whatever the transport, a tool does exactly what the same JSON-RPC calls would do, fenced
//! by the claim token in the same way.

mod args;
mod tools;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use serde_json::{Map, Value, json};

use crate::rpc::{Dispatcher, Params, Principal, RpcError};

pub use tools::TOOL_NAMES;

/// Where the tools send their JSON-RPC calls.
pub trait Backend: Send + Sync + 'static {
    /// Calls `method` with the named parameters `params` (an object) and answers its
    /// `result` or its error. `principal` is the caller when the transport knows one (the
    /// bearer token's principal on `POST /mcp`); `None` leaves it to the backend (the server's
    /// anonymous operator without tokens, or the remote backend's own token).
    fn call(
        &self,
        method: &str,
        params: Value,
        principal: Option<&Principal>,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;
}

/// The in-process backend: a [`Dispatcher`], acting for the caller's principal when there is
/// one.
#[derive(Debug, Clone)]
pub struct DispatcherBackend {
    dispatcher: Dispatcher,
    require_principal: bool,
}

impl DispatcherBackend {
    /// Calls go to `dispatcher` (which acts for its own principal when a call names none).
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self {
            dispatcher,
            require_principal: false,
        }
    }

    /// With `required`, a call that names no principal is refused (−32002) instead of acting
    /// for the dispatcher's own: a server with tokens must never serve an unidentified call as
    /// its operator, whatever path a request took through the MCP transport.
    pub fn requiring_principal(mut self, required: bool) -> Self {
        self.require_principal = required;
        self
    }
}

impl Backend for DispatcherBackend {
    async fn call(
        &self,
        method: &str,
        params: Value,
        principal: Option<&Principal>,
    ) -> Result<Value, RpcError> {
        let params = match params {
            Value::Object(map) => Params::new(map),
            _ => Params::default(),
        };
        match principal {
            Some(p) => {
                self.dispatcher
                    .for_principal(p.clone())
                    .call(method, params)
                    .await
            }
            None if self.require_principal => Err(RpcError::new(
                crate::rpc::code::UNAUTHORIZED,
                "no principal for this call: send the bearer token",
            )),
            None => self.dispatcher.call(method, params).await,
        }
    }
}

/// The environment's step and claim token, used when a step tool's call leaves out `step_id`
/// or `claim_token` (an explicit, non-empty argument always wins). Only the stdio server has
/// them: a cron runner claims a step and starts the agent with `SORTIE_STEP_ID` and
/// `SORTIE_CLAIM_TOKEN`. `POST /mcp` serves many agents and has none.
#[derive(Clone, Default)]
pub struct Fallbacks {
    step_id: Option<String>,
    claim_token: Option<String>,
    from_env: bool,
}

impl std::fmt::Debug for Fallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallbacks")
            .field("step_id", &self.step_id)
            .field(
                "claim_token",
                &self.claim_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The environment variable of the step fallback.
pub const STEP_ID_VAR: &str = "SORTIE_STEP_ID";
/// The environment variable of the claim token fallback.
pub const CLAIM_TOKEN_VAR: &str = "SORTIE_CLAIM_TOKEN";

impl Fallbacks {
    /// No fallbacks (`POST /mcp`).
    pub fn none() -> Self {
        Self::default()
    }

    /// The fallbacks that `lookup` gives for [`STEP_ID_VAR`] and [`CLAIM_TOKEN_VAR`]; a
    /// variable set to the empty string counts as unset. `lookup` is `std::env::var` in the
    /// binary and a map in tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            step_id: get(STEP_ID_VAR),
            claim_token: get(CLAIM_TOKEN_VAR),
            from_env: true,
        }
    }

    /// The fallbacks of this process's environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The MCP server: the tool list and the tool calls, over a [`Backend`]. Cheap to clone.
pub struct VigilMcp<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    backend: B,
    fallbacks: Fallbacks,
    tools: Vec<Tool>,
}

impl<B> Clone for VigilMcp<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> std::fmt::Debug for VigilMcp<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VigilMcp")
            .field("fallbacks", &self.inner.fallbacks)
            .finish_non_exhaustive()
    }
}

/// What the server tells an agent at `initialize`.
const INSTRUCTIONS: &str = "Vigil coordinates work between agents: tasks (steps) are claimed \
with a claim token that fences every later write, and resources are guarded by leases. \
Working on a step: call heartbeat regularly (well within the lease time), then complete_step \
or fail_step. A status of stale_claim means your claim is over: stop working on that step at \
once and do not retry.";

impl<B: Backend> VigilMcp<B> {
    /// A server calling `backend`, with `fallbacks` for the step tools.
    pub fn new(backend: B, fallbacks: Fallbacks) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                fallbacks,
                tools: tools::list(),
            }),
        }
    }

    /// Every tool, as `tools/list` shows them.
    pub fn tools(&self) -> &[Tool] {
        &self.inner.tools
    }

    /// Runs tool `name` with `arguments` for `principal` (see [`Backend::call`]): its
    /// result — a JSON object as structured content plus the same JSON as text — or a tool
    /// error (`is_error`) whose text holds the error's code and message, naming the argument
    /// at fault. `None` for a tool that does not exist.
    pub async fn call_tool_as(
        &self,
        name: &str,
        arguments: Map<String, Value>,
        principal: Option<&Principal>,
    ) -> Option<CallToolResult> {
        let cx = tools::Cx {
            backend: &self.inner.backend,
            fallbacks: &self.inner.fallbacks,
            principal,
        };
        let outcome = tools::call(&cx, name, arguments).await?;
        Some(match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => tool_error(&e),
        })
    }
}

/// A tool error: text only — `error <code>: <message>`, then `{"error": {code, message,
/// data}}` as JSON in a second block. No `structuredContent`: hosts on the TypeScript SDK
/// check structured content against the tool's `outputSchema` even on errors, and would
/// replace the refusal with their own schema error.
fn tool_error(e: &RpcError) -> CallToolResult {
    let detail = json!({
        "error": {"code": e.code, "message": e.message, "data": e.data},
    });
    CallToolResult::error(vec![
        ContentBlock::text(format!("error {}: {}", e.code, e.message)),
        ContentBlock::text(detail.to_string()),
    ])
}

impl<B: Backend> ServerHandler for VigilMcp<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("vigil", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        Ok(ListToolsResult::with_all_items(self.inner.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        // Over HTTP the request's parts carry the principal the bearer-token middleware found.
        let principal = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>());
        let arguments = request.arguments.unwrap_or_default();
        match self.call_tool_as(&request.name, arguments, principal).await {
            Some(result) => Ok(result.into()),
            None => Err(rmcp::ErrorData::invalid_params(
                format!(
                    "unknown tool {:?}; the tools are {}",
                    request.name,
                    TOOL_NAMES.join(", ")
                ),
                None,
            )),
        }
    }
}

/// The Host names `POST /mcp` accepts for a server listening on `listen` (rmcp checks the
/// `Host` header against them, against DNS rebinding): on a loopback address the loopback
/// names, on one other address that address; `None` — any Host — on an unspecified address
/// (`0.0.0.0`, `::`), where the server is meant to be reached under names it cannot know
/// and the bearer token is the guard.
pub fn allowed_hosts(listen: SocketAddr) -> Option<Vec<String>> {
    let ip = listen.ip();
    if ip.is_unspecified() {
        None
    } else if ip.is_loopback() {
        Some(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
    } else {
        Some(vec![ip.to_string()])
    }
}

/// The streamable-HTTP service for `POST /mcp`: stateless (no sessions, nothing kept between
/// requests), JSON answers rather than event streams, bodies up to `max_body_bytes` (larger
/// is HTTP 413), and the Host names of [`allowed_hosts`] for `listen`. Mount it behind the
/// bearer-token middleware: the tools act for the principal it puts in the request.
pub fn http_service<B: Backend>(
    server: VigilMcp<B>,
    max_body_bytes: usize,
    listen: SocketAddr,
) -> StreamableHttpService<VigilMcp<B>, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_sse_retry(None)
        .with_max_request_body_bytes(max_body_bytes);
    config = match allowed_hosts(listen) {
        Some(hosts) => config.with_allowed_hosts(hosts),
        None => config.disable_allowed_hosts(),
    };
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Serves `server` over stdin and stdout until the client closes stdin. Nothing else may
/// write to stdout meanwhile: log to stderr.
pub async fn serve_stdio<B: Backend>(server: VigilMcp<B>) -> std::io::Result<()> {
    use rmcp::ServiceExt;
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests;
