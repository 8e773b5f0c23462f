//! A worker against `vigil serve`: it opens a session, creates a demo task if none is pending,
//! claims a task, keeps the claim alive with step heartbeats, completes it and closes the
//! session. Every step is printed.
//!
//! ```text
//! cargo run --release -- serve &
//! cargo run --example worker -- --target http://127.0.0.1:7420 [--id worker-1] [--token T] [--ws]
//! ```
//!
//! The token may also come from `VIGIL_TOKEN`. Exits with status 1 and a one-line message when
//! the server is not there or refuses the token.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use vigil::client::{Claim, Client, ClientError, Election, Session, SessionOptions, TransportKind};

struct Args {
    target: String,
    id: String,
    token: Option<String>,
    transport: TransportKind,
}

fn usage() -> String {
    "usage: worker [--target http://127.0.0.1:7420] [--id worker-1] [--token T] [--ws]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        target: "http://127.0.0.1:7420".into(),
        id: format!("worker-{}", std::process::id()),
        token: std::env::var("VIGIL_TOKEN").ok().filter(|t| !t.is_empty()),
        transport: TransportKind::Http,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--target" => args.target = value("--target")?,
            "--id" => args.id = value("--id")?,
            "--token" => args.token = Some(value("--token")?),
            "--ws" => args.transport = TransportKind::WebSocket,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(args)
}

async fn run(args: Args) -> Result<(), ClientError> {
    let client = Client::builder()
        .url(&args.target)
        .transport(args.transport)
        .token_opt(args.token)
        .connect()
        .await?;
    println!(
        "connected to {} ({:?})",
        client.current_url(),
        args.transport
    );

    let session = Session::new(
        &client,
        SessionOptions::new(&args.id)
            .roles(["worker"])
            .ttl(Duration::from_secs(10))
            .metadata(json!({"example": "worker"})),
    )
    .await?;
    println!(
        "registered {} in epoch {} (TTL {:?}, heartbeats every third of it)",
        session.id(),
        session.epoch(),
        session.ttl()
    );
    let election = Election::new(&session);
    let (leader, term) = election.leader();
    println!(
        "leader: {} in term {term}{}",
        leader.as_ref().map_or("nobody", |l| l.as_str()),
        if election.is_leader() {
            " (this worker)"
        } else {
            ""
        }
    );

    let state = client.state(Some(0)).await?;
    if state.task_count("pending") == 0 {
        let task = client
            .create_task(
                json!({"text": "demo task from examples/worker.rs"}),
                None,
                &[],
            )
            .await?;
        println!("no task was pending: created demo task {}", task.id);
    } else {
        println!("{} task(s) pending", state.task_count("pending"));
    }

    let Some(mut claim) = Claim::next(&client, session.id()).await? else {
        println!("nothing claimable (another worker was faster?)");
        session.close().await?;
        return Ok(());
    };
    println!("claimed task {}: {}", claim.id(), claim.payload());
    claim.keep_alive(Duration::from_millis(500), Some(Duration::from_secs(60)));
    println!("step heartbeats every 500 ms, extending leases by 60 s");

    // "Work" for two seconds, unless the claim or the session is lost first.
    let stale = claim.stale();
    let lost = session.lost();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        _ = stale => {
            println!("task {} was taken back (stale claim): dropping it", claim.id());
            session.close().await?;
            return Ok(());
        }
        reason = lost => println!("session lost: {reason}"),
    }
    println!(
        "{} step heartbeat(s) acknowledged",
        claim.state().heartbeats
    );

    let id = claim.id();
    let result = json!({"ok": true});
    // A failed completion hands the claim back: retry a few times while the error is transient.
    let mut attempt = 1;
    let done = loop {
        match claim.complete(Some(result.clone())).await {
            Ok(done) => break done,
            Err(failed) if failed.error.is_transient() && attempt < 3 => {
                println!("completing task {id} failed ({}): retrying", failed.error);
                tokio::time::sleep(Duration::from_millis(500)).await;
                claim = *failed.claim;
                attempt += 1;
            }
            Err(failed) => return Err(failed.into()),
        }
    };
    println!("completed task {id}: {:?}", done.status);

    let left = session.close().await?;
    println!(
        "unregistered (tasks handed back: {})",
        left.tasks_reassigned
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let target = args.target.clone();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ClientError::Transport(_)) => {
            eprintln!("worker: {e}\n(is `vigil serve` running at {target}?)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}
