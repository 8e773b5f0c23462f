//! Slow clients against `vigil serve` (issue 14, point 14): in each of `--waves` (2) waves,
//! opens `--connections` (1000) connections that each send half a request head and stall,
//! and reports, from outside the server process:
//!
//! * the server's resident memory (`VmRSS` of `/proc/<pid>/status`) before the wave, while its
//!   connections are held (1 s after the last opened), and `--hold` (12 s, past the default
//!   10 s header read timeout) after the last opened;
//! * how many of all the slow connections opened so far are still open then, and how many
//!   bytes they were answered;
//! * a well-behaved client's `GET /healthz` while they are held and after: its latency and the
//!   size of its answer.
//!
//! ```sh
//! cargo bench --bench connections                              # this build's `vigil`
//! cargo bench --bench connections -- --old /path/to/old/vigil  # and an older binary, same run
//! ```
//!
//! Every wait is bounded; the servers are started on free loopback ports and killed at the end.
//! Linux only (it reads `/proc`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    connections: usize,
    waves: usize,
    hold: Duration,
    old: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        connections: 1000,
        waves: 2,
        hold: Duration::from_secs(12),
        old: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--connections" => {
                o.connections = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--connections N")
            }
            "--waves" => o.waves = args.next().and_then(|v| v.parse().ok()).expect("--waves N"),
            "--hold" => {
                let secs: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--hold SECONDS");
                o.hold = Duration::from_secs_f64(secs);
            }
            "--old" => o.old = Some(args.next().expect("--old PATH")),
            "--bench" => {} // passed by `cargo bench`
            other => panic!(
                "unknown argument {other}; takes --connections N, --hold SECONDS, --old PATH"
            ),
        }
    }
    o
}

fn main() {
    let o = options();
    println!(
        "{} waves of {} connections sending half a request head, each held {:?}\n",
        o.waves, o.connections, o.hold
    );
    println!(
        "{:<11} {:>4} {:>11} {:>9} {:>10} {:>12} {:>9} {:>20} {:>20}",
        "server",
        "wave",
        "RSS before",
        "RSS held",
        "RSS after",
        "still open",
        "answered",
        "healthz while held",
        "healthz after"
    );
    let mut servers = vec![("this build", env!("CARGO_BIN_EXE_vigil").to_string())];
    if let Some(old) = &o.old {
        servers.push(("old", old.clone()));
    }
    for (label, binary) in servers {
        for (wave, row) in measure(&binary, &o).iter().enumerate() {
            println!(
                "{:<11} {:>4} {:>8} MB {:>6} MB {:>7} MB {:>5} / {:<5} {:>7} B {:>20} {:>20}",
                label,
                wave + 1,
                mb(row.rss_before),
                mb(row.rss_held),
                mb(row.rss_after),
                row.still_open,
                row.opened,
                row.answered_bytes,
                row.healthz_held,
                row.healthz_after,
            );
        }
    }
}

struct Row {
    opened: usize,
    rss_before: u64,
    rss_held: u64,
    rss_after: u64,
    still_open: usize,
    answered_bytes: usize,
    healthz_held: String,
    healthz_after: String,
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// Kills the server when the measurement ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(binary: &str, o: &Options) -> Vec<Row> {
    let addr = free_port();
    let server = Server(
        Command::new(binary)
            .args(["serve", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}")),
    );
    let pid = server.0.id();
    let started = Instant::now();
    while healthz(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{binary} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut slow = Vec::with_capacity(o.connections * o.waves);
    let mut rows = Vec::new();
    for _ in 0..o.waves {
        let rss_before = rss_kb(pid);
        let opening = Instant::now();
        for _ in 0..o.connections {
            let mut stream =
                TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            stream
                .write_all(b"POST /rpc HTTP/1.1\r\nHost: vigil\r\nContent-Ty")
                .expect("write half a head");
            stream.set_nonblocking(true).expect("nonblocking");
            slow.push(stream);
        }
        eprintln!(
            "{binary}: {} connections opened in {:.1?}",
            o.connections,
            opening.elapsed()
        );
        let opened = Instant::now();
        // Let the server read them all.
        std::thread::sleep(Duration::from_secs(1));
        let rss_held = rss_kb(pid);
        let healthz_held = describe(healthz(addr));
        std::thread::sleep(o.hold.saturating_sub(opened.elapsed()));
        let mut still_open = 0;
        let mut answered_bytes = 0;
        let mut buf = [0u8; 4096];
        for stream in &mut slow {
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => answered_bytes += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        still_open += 1;
                        break;
                    }
                    Err(_) => break, // reset: closed
                }
            }
        }
        rows.push(Row {
            opened: slow.len(),
            rss_before,
            rss_held,
            rss_after: rss_kb(pid),
            still_open,
            answered_bytes,
            healthz_held,
            healthz_after: describe(healthz(addr)),
        });
    }
    drop(slow);
    drop(server);
    rows
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// `VmRSS` of the process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc status")
}

/// One `GET /healthz` on a new connection, bounded by 5 s: its latency and answer size.
fn healthz(addr: SocketAddr) -> std::io::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not HTTP 200"));
    }
    Ok((started.elapsed(), answer.len()))
}

fn describe(result: std::io::Result<(Duration, usize)>) -> String {
    match result {
        Ok((latency, bytes)) => format!("{:.2} ms, {bytes} B", latency.as_secs_f64() * 1e3),
        Err(e) => format!("failed: {}", e.kind()),
    }
}
