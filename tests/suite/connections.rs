//! Bounded resources over real sockets (issue 14, point 14): the header, body and idle timeouts
//! and the cap on open connections, each seen from a raw `TcpStream`; and a graceful shutdown
//! that still answers what is in flight. Timeouts are short (hundreds of milliseconds) and
//! every wait is bounded by `LIMIT`, so a connection the server fails to close fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use vigil::server::{Server, ServerConfig};
use vigil::{Config, Coordinator};

/// The longest any single wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(5);

/// How late a close may come after its deadline on a busy machine.
const SLACK: Duration = Duration::from_secs(2);

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: vigil\r\n\r\n";

fn health_body() -> Vec<u8> {
    br#"{"jsonrpc":"2.0","method":"system.health","params":{},"id":1}"#.to_vec()
}

/// A server with `config` on a free loopback port: its address and the sender that stops it.
async fn start(config: ServerConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (url, _coordinator, stop) = crate::common::serve(Config::default(), config).await;
    let addr = url.strip_prefix("http://").unwrap().parse().unwrap();
    (addr, stop)
}

/// Reads until the server closes the connection (end of stream or reset): what it sent, and
/// when it closed. Panics if it is still open after `LIMIT`.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {LIMIT:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response (head, and a body of its Content-Length) within `LIMIT`;
/// returns the head and the body. Panics if the connection closes first.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return (head, got[end + 4..end + 4 + length].to_vec());
            }
        }
        let n = timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response within the limit")
            .expect("readable");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn rpc_request(body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut request = format!(
        "POST /rpc HTTP/1.1\r\nHost: vigil\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_header_timeout() {
    let header = Duration::from_millis(300);
    let (addr, _stop) = start(ServerConfig {
        header_read_timeout: header,
        idle_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    })
    .await;

    // Half a head, then nothing.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /rpc HTTP/1.1\r\nHost: vigil\r\nContent-Ty")
        .await
        .unwrap();
    // A slowloris: a header byte every 50 ms, which would last 5 s; the deadline does not
    // move with it.
    let trickle_started = Instant::now();
    let (mut trickle_in, mut trickle_out) = TcpStream::connect(addr).await.unwrap().into_split();
    let trickling = tokio::spawn(async move {
        trickle_out
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        for _ in 0..100 {
            if trickle_out.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // A client that sends its request at once is served meanwhile.
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    prompt.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(&mut prompt).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let (answered, closed) = read_until_closed(&mut stalled).await;
    assert!(
        answered.is_empty(),
        "no answer to half a head: {answered:?}"
    );
    let open_for = closed - started;
    assert!(
        open_for >= header && open_for < header + SLACK,
        "closed after {open_for:?}"
    );

    let mut buf = [0u8; 256];
    let trickle_closed = match timeout_at(trickle_started + LIMIT, trickle_in.read(&mut buf)).await
    {
        Err(_) => panic!("the trickling connection is still open after {LIMIT:?}"),
        Ok(Ok(0) | Err(_)) => Instant::now(),
        Ok(Ok(n)) => panic!("answered a trickled head: {:?}", &buf[..n]),
    };
    let open_for = trickle_closed - trickle_started;
    assert!(
        open_for >= header && open_for < header + SLACK,
        "a trickle kept the connection open for {open_for:?}"
    );
    trickling.await.unwrap();
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_after_the_body_timeout() {
    let body_timeout = Duration::from_millis(300);
    let (addr, _stop) = start(ServerConfig {
        body_read_timeout: body_timeout,
        ..ServerConfig::default()
    })
    .await;
    let body = health_body();

    // The head says 62 bytes; 11 come, then nothing.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let request = rpc_request(&body, "");
    stalled
        .write_all(&request[..request.len() - body.len() + 11])
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stalled).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let open_for = closed - started;
    assert!(
        open_for >= body_timeout && open_for < body_timeout + SLACK,
        "answered and closed after {open_for:?}"
    );

    // A body trickled a byte every 50 ms (3 s in all) meets the same deadline.
    let started = Instant::now();
    let (mut trickle_in, mut trickle_out) = TcpStream::connect(addr).await.unwrap().into_split();
    let head_len = request.len() - body.len();
    trickle_out.write_all(&request[..head_len]).await.unwrap();
    let trickled = request[head_len..].to_vec();
    let trickling = tokio::spawn(async move {
        for byte in trickled {
            if trickle_out.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match timeout_at(started + LIMIT, trickle_in.read(&mut buf)).await {
            Err(_) => panic!("a trickled body kept the connection open past {LIMIT:?}"),
            Ok(Ok(0) | Err(_)) => break Instant::now(),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    };
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        closed - started < body_timeout + SLACK,
        "{:?}",
        closed - started
    );
    trickling.await.unwrap();

    // A body that comes in time is answered.
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    prompt.write_all(&request).await.unwrap();
    let (head, answer) = read_response(&mut prompt).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["result"].is_object(), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is shorter than the idle timeout: a connection between requests
    // has the idle timeout, not the header timeout.
    let header = Duration::from_millis(150);
    let idle = Duration::from_millis(600);
    let (addr, _stop) = start(ServerConfig {
        header_read_timeout: header,
        idle_timeout: idle,
        ..ServerConfig::default()
    })
    .await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Silent for twice the header timeout, well within the idle timeout: still served.
    tokio::time::sleep(header * 2).await;
    let sent = Instant::now();
    conn.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Then silent: closed after the idle timeout, without an answer.
    let (answered, closed) = read_until_closed(&mut conn).await;
    assert!(answered.is_empty(), "{answered:?}");
    let idle_for = closed - sent;
    assert!(
        idle_for >= idle && idle_for < idle + SLACK,
        "closed after {idle_for:?}"
    );
}

/// The raw opening handshake of a WebSocket (RFC 6455 §1.3's sample key).
const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: vigil\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn an_idle_websocket_is_pinged_then_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(600);
    let (addr, _stop) = start(ServerConfig {
        idle_timeout: idle,
        ..ServerConfig::default()
    })
    .await;

    // A raw client that upgrades, then neither sends nor answers anything.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(WS_HANDSHAKE).await.unwrap();
    // The head byte by byte: what follows it (the welcome) stays unread.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        timeout(LIMIT, silent.read_exact(&mut byte))
            .await
            .expect("the upgrade's head")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let upgraded = Instant::now();
    // The welcome: an unmasked text frame (0x81) of 126 to 65 535 bytes (a 16-bit length).
    let mut head = [0u8; 4];
    timeout(LIMIT, silent.read_exact(&mut head))
        .await
        .expect("the welcome")
        .unwrap();
    assert_eq!(
        head[..2],
        [0x81, 126],
        "a text frame with a 16-bit length first"
    );
    let mut welcome = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
    silent.read_exact(&mut welcome).await.unwrap();
    let welcome: serde_json::Value = serde_json::from_slice(&welcome).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    let mut first = [0u8; 2];
    timeout(LIMIT, silent.read_exact(&mut first))
        .await
        .expect("a frame within the limit")
        .unwrap();
    let pinged_after = upgraded.elapsed();
    assert_eq!(first, [0x89, 0x00], "an empty ping first");
    assert!(
        pinged_after >= idle / 2 - Duration::from_millis(50) && pinged_after < idle,
        "pinged after {pinged_after:?}"
    );
    let (rest, closed) = read_until_closed(&mut silent).await;
    // A close frame: 0x88, its length, code 1000, "idle timeout".
    let reason = b"idle timeout";
    assert_eq!(rest.len(), 4 + reason.len(), "{rest:?}");
    assert_eq!(rest[..4], [0x88, 2 + reason.len() as u8, 0x03, 0xe8]);
    assert_eq!(&rest[4..], reason);
    let silent_for = closed - upgraded;
    assert!(
        silent_for >= idle - Duration::from_millis(50) && silent_for < idle + SLACK,
        "closed after {silent_for:?}"
    );

    // A client that only listens, but whose library answers pings, stays connected.
    let (mut listener, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    crate::common::welcome(&mut listener).await;
    let until = Instant::now() + idle * 3;
    let mut pings = 0;
    loop {
        match timeout_at(until, listener.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("the listening client got {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings in three idle periods");
    let request = String::from_utf8(health_body()).unwrap();
    listener.send(Message::text(request)).await.unwrap();
    let answer = loop {
        match timeout(LIMIT, listener.next()).await.expect("an answer") {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("{other:?}"),
        }
    };
    let answer: serde_json::Value = serde_json::from_str(answer.as_str()).unwrap();
    assert!(answer["result"].is_object(), "{answer}");
}

#[tokio::test]
async fn the_connection_over_the_cap_waits_until_one_closes() {
    let (addr, _stop) = start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    // Two keep-alive connections, each served once, hold both slots.
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    for conn in [&mut first, &mut second] {
        conn.write_all(HEALTHZ).await.unwrap();
        let (head, _) = read_response(conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // The third is let in by the kernel's backlog, but not served.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 64];
    let early = timeout(Duration::from_millis(400), third.read(&mut buf)).await;
    assert!(early.is_err(), "served over the cap: {early:?}");

    // One closes: the third is served, and the second still is.
    drop(first);
    let (head, _) = read_response(&mut third).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    second.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(&mut second).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_websocket_holds_its_slot_until_it_closes() {
    let (addr, _stop) = start(ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 64];
    let early = timeout(Duration::from_millis(400), http.read(&mut buf)).await;
    assert!(early.is_err(), "served beside an open WebSocket: {early:?}");
    ws.close(None).await.unwrap();
    let (head, _) = read_response(&mut http).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn shutdown_answers_requests_in_flight_and_is_not_held_by_stalled_clients() {
    let header = Duration::from_millis(500);
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    let server = Server::bind(
        coordinator.clone(),
        &ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            header_read_timeout: header,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    // In flight: the head is read (the server asked for the body with 100 Continue), the
    // body not yet sent.
    let body = health_body();
    let request = rpc_request(&body, "Expect: 100-continue\r\n");
    let head_len = request.len() - body.len();
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight.write_all(&request[..head_len]).await.unwrap();
    let (head, _) = read_response(&mut in_flight).await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    // Idle between requests.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(HEALTHZ).await.unwrap();
    read_response(&mut idle).await;
    // Half a head.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // A WebSocket.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    crate::common::welcome(&mut ws).await;

    let stopping = Instant::now();
    stop.send(()).unwrap();
    // The idle connection is closed at once, and nothing new is accepted.
    let (answered, _) = read_until_closed(&mut idle).await;
    assert!(answered.is_empty(), "{answered:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    // The WebSocket is told the server is going away.
    let close = loop {
        match timeout(LIMIT, ws.next()).await.expect("a close frame") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    // The request in flight is answered, then its connection closes.
    in_flight.write_all(&body).await.unwrap();
    let (head, answer) = read_response(&mut in_flight).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["result"].is_object(), "{answer}");
    read_until_closed(&mut in_flight).await;
    // The half head holds the shutdown no longer than the header timeout.
    read_until_closed(&mut stalled).await;
    timeout(LIMIT, running)
        .await
        .expect("the server stops once every connection closed")
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() < header + SLACK,
        "{:?}",
        stopping.elapsed()
    );
    coordinator.shutdown().await;
}

#[tokio::test]
async fn zero_timeouts_and_caps_are_refused() {
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    for (config, named) in [
        (
            ServerConfig {
                header_read_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
            "header_read_timeout",
        ),
        (
            ServerConfig {
                body_read_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
            "body_read_timeout",
        ),
        (
            ServerConfig {
                idle_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
            "idle_timeout",
        ),
        (
            ServerConfig {
                max_connections: 0,
                ..ServerConfig::default()
            },
            "max_connections",
        ),
    ] {
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config
        };
        let refused = Server::bind(coordinator.clone(), &config)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert!(refused.to_string().contains(named), "{refused}");
    }
    assert_eq!(ServerConfig::default().validate(), Ok(()));
    coordinator.shutdown().await;
}
