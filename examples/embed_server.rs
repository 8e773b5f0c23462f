//! Vigil's JSON-RPC API mounted into an application's own axum router, beside the
//! application's routes: `/hello` is the application's, `/vigil/rpc`, `/vigil/ws`,
//! `/vigil/metrics` and `/vigil/healthz` are Vigil's.
//!
//! ```sh
//! cargo run --example embed_server                  # listens on 127.0.0.1:7421
//! curl -s localhost:7421/hello
//! curl -s localhost:7421/vigil/rpc -d '{"jsonrpc":"2.0","method":"system.register","params":{"id":"w1","roles":["worker"]},"id":1}'
//! ```
//!
//! A first argument changes the address (`cargo run --example embed_server -- 127.0.0.1:9000`).

use axum::Router;
use axum::routing::get;
use vigil::server::ServerConfig;
use vigil::{Config, Coordinator};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7421".into());
    let coordinator = Coordinator::start(Config::default()).await?;
    // The application's own routes, with Vigil's nested under /vigil. The router carries its
    // own state; `ServerConfig` sets its token, body and batch limits and heartbeat rate (its
    // `listen` is not used here: the application binds).
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the application\n" }))
        .nest(
            "/vigil",
            vigil::server::router(coordinator.clone(), &ServerConfig::default())?,
        );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "application on http://{0}/hello, Vigil's JSON-RPC on http://{0}/vigil/rpc; Ctrl-C stops",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    coordinator.shutdown().await;
    Ok(())
}
