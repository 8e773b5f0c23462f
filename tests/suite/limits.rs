//! Bounded resources over the wire (issue 14, points 11 and 12): every list answers a page
//! (default 100, at most 1000 items, with `after` to page on), a response has a byte budget
//! that read-only answers cannot push it past, and live tasks are capped.

use std::collections::BTreeSet;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use vigil::server::ServerConfig;
use vigil::work::lease::LeaseMode;
use vigil::work::task::TaskSpec;
use vigil::{Config, Coordinator, EventKind, LeaseOwner, RegisterRequest};

use crate::common::serve;

/// Posts `body` to `url` + `path`: the raw answer text and its JSON.
async fn post(url: &str, path: &str, body: String) -> (String, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

async fn call(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    post(url, "/rpc", body.to_string()).await.1
}

async fn result(url: &str, method: &str, params: Value) -> Value {
    let answer = call(url, method, params).await;
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// One WebSocket text frame out, one back: the raw answer text.
async fn over_websocket(url: &str, body: String) -> String {
    let ws_url = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    crate::common::welcome(&mut ws).await;
    ws.send(Message::Text(body.into())).await.unwrap();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an answer frame within 10 s")
        .unwrap()
        .unwrap();
    match frame {
        Message::Text(text) => text.as_str().to_string(),
        other => panic!("{other:?}"),
    }
}

/// Registers `n` instances `w-000`… with `pad` bytes of metadata each.
async fn register_many(c: &Coordinator, n: usize, pad: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("w-{i:03}");
        c.register(RegisterRequest::new(&id).metadata(json!({"pad": "x".repeat(pad)})))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// The id, code and `data.reason` of an error entry.
fn refusal(entry: &Value) -> (i64, &str) {
    (
        entry["error"]["code"].as_i64().unwrap_or(0),
        entry["error"]["data"]["reason"].as_str().unwrap_or(""),
    )
}

const BUDGET: usize = 256 * 1024;

/// The attack, scaled down: a batch of `system.get_state` calls over many instances
/// asked for far more than the budget. The answers that fit are whole, the rest are −32005
/// `answer_budget` in their place, a state-changing call after them is still run and answered,
/// and the response stays within the budget plus the short error entries — on `POST /rpc`,
/// `POST /rpc/batch` and WebSocket alike.
#[tokio::test]
async fn a_batch_of_get_state_stays_within_the_answer_budget() {
    let server = ServerConfig {
        max_answer_bytes: BUDGET,
        ..ServerConfig::default()
    };
    let (url, coordinator, _stop) = serve(Config::default(), server).await;
    register_many(&coordinator, 200, 300).await;
    for transport in ["/rpc", "/rpc/batch", "ws"] {
        let late = format!("late{}", transport.replace('/', "-"));
        let mut batch: Vec<Value> = (0..60)
            .map(|i| json!({"jsonrpc": "2.0", "method": "system.get_state", "id": i}))
            .collect();
        batch.push(json!({"jsonrpc": "2.0", "method": "system.register", "params": {"roles": ["worker"], "id": late}, "id": "reg"}));
        batch.push(json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": late}, "id": "hb"}));
        let body = Value::Array(batch).to_string();
        let text = match transport {
            "ws" => over_websocket(&url, body).await,
            path => post(&url, path, body).await.0,
        };
        let answers: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(answers.len(), 62, "{transport}: one answer per call");
        let full: Vec<&Value> = answers[..60]
            .iter()
            .filter(|a| a.get("result").is_some())
            .collect();
        let refused: Vec<&Value> = answers[..60]
            .iter()
            .filter(|a| a.get("error").is_some())
            .collect();
        assert!(!full.is_empty(), "{transport}: the first answers fit");
        assert!(!refused.is_empty(), "{transport}: the later ones do not");
        assert_eq!(full.len() + refused.len(), 60);
        for a in &full {
            assert_eq!(a["result"]["instances"].as_array().unwrap().len(), 100);
        }
        for a in &refused {
            assert_eq!(refusal(a), (-32005, "answer_budget"), "{transport}: {a}");
            assert_eq!(a["error"]["data"]["budgetBytes"], BUDGET);
            assert_eq!(a["error"]["data"]["method"], "system.get_state");
            assert!(a["error"]["data"]["answerBytes"].as_u64().unwrap() > 0);
        }
        // Ids stay with their calls, in order.
        let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
        assert_eq!(ids[0], &json!(0));
        assert_eq!(ids[59], &json!(59));
        // The calls that change state ran and were answered whole.
        assert_eq!(answers[60]["result"]["registered"], true, "{transport}");
        assert_eq!(answers[61]["result"]["alive"], true, "{transport}");
        // Within the budget, but for the short error entries.
        let error_bytes: usize = refused.iter().map(|a| a.to_string().len() + 1).sum();
        assert!(
            text.len() <= BUDGET + error_bytes,
            "{transport}: {} bytes",
            text.len()
        );
        assert!(refused.iter().all(|a| a.to_string().len() < 600));
    }
}

/// A single read-only answer over the budget is refused too; a smaller one is answered.
#[tokio::test]
async fn a_single_answer_over_the_budget_is_refused() {
    let server = ServerConfig {
        max_answer_bytes: 16 * 1024,
        ..ServerConfig::default()
    };
    let (url, coordinator, _stop) = serve(Config::default(), server).await;
    register_many(&coordinator, 100, 300).await;
    let big =
        json!({"jsonrpc": "2.0", "method": "system.get_state", "params": {"limit": 100}, "id": 7});
    let (_, answer) = post(&url, "/rpc", big.to_string()).await;
    assert_eq!(refusal(&answer), (-32005, "answer_budget"), "{answer}");
    assert_eq!(answer["id"], 7);
    let over_ws: Value =
        serde_json::from_str(&over_websocket(&url, big.to_string()).await).unwrap();
    assert_eq!(refusal(&over_ws), (-32005, "answer_budget"), "{over_ws}");
    let small = result(&url, "system.get_state", json!({"limit": 5})).await;
    assert_eq!(small["instances"].as_array().unwrap().len(), 5);
}

/// Instances, tasks, leases and recent events: 100 when no limit is given, up to 1000 when
/// asked, −32602 naming `limit` above; a cut list says so and where to go on.
#[tokio::test]
async fn lists_have_a_default_and_a_maximum_limit() {
    let (url, c, _stop) = serve(Config::default(), ServerConfig::default()).await;
    let ids = register_many(&c, 150, 0).await;
    for (i, id) in ids.iter().enumerate() {
        c.create_task(TaskSpec::new(json!({"n": i}))).await.unwrap();
        let owner = LeaseOwner::Instance(id.clone());
        c.acquire_lease(&format!("res/{i:03}"), owner, LeaseMode::Exclusive, None)
            .await
            .unwrap();
    }
    let state = result(&url, "system.get_state", json!({})).await;
    assert_eq!(state["instances"].as_array().unwrap().len(), 100);
    assert_eq!(state["instanceCount"], 150);
    assert_eq!(state["truncated"], true);
    assert_eq!(state["nextAfter"], "w-099");
    assert_eq!(state["recentEvents"].as_array().unwrap().len(), 100);
    let all = result(&url, "system.get_state", json!({"limit": 1000})).await;
    assert_eq!(all["instances"].as_array().unwrap().len(), 150);
    assert_eq!(all["truncated"], false);
    assert!(all.get("nextAfter").is_none());

    // ClaudeBench's default order is newest first, paged by offset.
    let tasks = result(&url, "task.list", json!({})).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 100);
    assert_eq!(
        (tasks["totalCount"].clone(), tasks["hasMore"].clone()),
        (json!(150), json!(true))
    );
    assert_eq!(tasks["tasks"][0]["id"], "t-150");
    assert!(
        tasks.get("nextAfter").is_none(),
        "a cursor pages id order only"
    );
    // Vigil's cursor pages upwards through id order.
    let tasks = result(&url, "task.list", json!({"order": "asc"})).await;
    assert_eq!(
        (tasks["total"].clone(), tasks["truncated"].clone()),
        (json!(150), json!(true))
    );
    assert_eq!(tasks["nextAfter"], "t-100");
    let tasks = result(&url, "task.list", json!({"limit": 1000})).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 150);
    assert_eq!(tasks["truncated"], false);

    let leases = result(&url, "lease.list", json!({})).await;
    assert_eq!(leases["leases"].as_array().unwrap().len(), 100);
    assert_eq!(
        (leases["total"].clone(), leases["truncated"].clone()),
        (json!(150), json!(true))
    );
    assert_eq!(leases["leases"][99]["key"], "res/099");
    let leases = result(&url, "lease.list", json!({"limit": 1000})).await;
    assert_eq!(leases["leases"].as_array().unwrap().len(), 150);

    for method in ["system.get_state", "task.list", "lease.list"] {
        let answer = call(&url, method, json!({"limit": 1001})).await;
        assert_eq!(answer["error"]["code"], -32602, "{method}: {answer}");
        assert_eq!(answer["error"]["data"]["field"], "limit", "{method}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1000"),
            "{answer}"
        );
    }
    let answer = call(&url, "lease.list", json!({"after": "res/001"})).await;
    assert_eq!(answer["error"]["data"]["field"], "after", "{answer}");
    let answer = call(&url, "task.list", json!({"after": "soon"})).await;
    assert_eq!(answer["error"]["data"]["field"], "after", "{answer}");
}

/// Reads every page of `method` at `limit` a page, following `nextAfter`: the items' ids.
async fn every_page(
    url: &str,
    method: &str,
    mut params: Value,
    field: &str,
    id: impl Fn(&Value) -> String,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = result(url, method, params.clone()).await;
        let items = page[field].as_array().unwrap();
        assert!(items.len() <= 7, "{method}: a page holds at most the limit");
        seen.extend(items.iter().map(&id));
        match page.get("nextAfter") {
            Some(next) => {
                assert_eq!(page["truncated"], true);
                params["after"] = next.clone();
            }
            None => {
                assert_eq!(page["truncated"], false);
                return seen;
            }
        }
    }
    panic!("{method}: more than 100 pages");
}

fn assert_once(what: &str, seen: &[String], expected: BTreeSet<String>) {
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "{what}: an item was listed twice");
    assert_eq!(unique, expected, "{what}");
    let mut sorted = seen.to_vec();
    sorted.sort();
    assert_eq!(sorted, seen, "{what}: pages come in order");
}

/// Paging by `after` lists every instance, task and lease exactly once, in order — including
/// the several holders of one shared lease, and with filters.
#[tokio::test]
async fn paging_returns_every_item_exactly_once() {
    let (url, c, _stop) = serve(Config::default(), ServerConfig::default()).await;
    let ids = register_many(&c, 53, 0).await;
    let mut task_ids = BTreeSet::new();
    for i in 0..41 {
        let task = c.create_task(TaskSpec::new(json!({"n": i}))).await.unwrap();
        task_ids.insert(task.id.to_string());
    }
    // Two claimed, so a status filter pages over a subset.
    let claimed: BTreeSet<String> = c
        .claim("w-000", 2)
        .await
        .unwrap()
        .iter()
        .map(|t| t.task.id.to_string())
        .collect();
    let mut leases = BTreeSet::new();
    for (i, id) in ids.iter().enumerate().take(20) {
        for (key, mode) in [
            ("shared".to_string(), LeaseMode::Shared),
            (format!("own/{i:02}"), LeaseMode::Exclusive),
        ] {
            let owner = LeaseOwner::Instance(id.clone());
            match c.acquire_lease(&key, owner, mode, None).await.unwrap() {
                vigil::LeaseOutcome::Granted(g) => {
                    leases.insert(format!("{key}#{}", g.fencing_token))
                }
                other => panic!("{other:?}"),
            };
        }
    }

    let instances = every_page(
        &url,
        "system.get_state",
        json!({"limit": 7}),
        "instances",
        |i| i["id"].as_str().unwrap().to_string(),
    )
    .await;
    assert_once("instances", &instances, ids.iter().cloned().collect());

    let task_number = |t: &Value| {
        format!(
            "{:05}",
            t["id"].as_str().unwrap()[2..].parse::<u32>().unwrap()
        )
    };
    let by_number = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .map(|id| format!("{:05}", id[2..].parse::<u32>().unwrap()))
            .collect()
    };
    let tasks = every_page(
        &url,
        "task.list",
        json!({"limit": 7, "order": "asc"}),
        "tasks",
        task_number,
    )
    .await;
    assert_once("tasks", &tasks, by_number(&task_ids));
    let pending = every_page(
        &url,
        "task.list",
        json!({"limit": 7, "status": "pending", "order": "asc"}),
        "tasks",
        task_number,
    )
    .await;
    let expected: BTreeSet<String> = task_ids.difference(&claimed).cloned().collect();
    assert_once("pending tasks", &pending, by_number(&expected));

    let lease_id = |l: &Value| format!("{}#{}", l["key"].as_str().unwrap(), l["fencingToken"]);
    let listed = every_page(&url, "lease.list", json!({"limit": 7}), "leases", lease_id).await;
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "a lease was listed twice");
    assert_eq!(unique, leases);
    assert_eq!(
        listed.iter().filter(|l| l.starts_with("shared#")).count(),
        20
    );
    let own = every_page(
        &url,
        "lease.list",
        json!({"limit": 7, "prefix": "own"}),
        "leases",
        lease_id,
    )
    .await;
    assert_eq!(own.len(), 20);
    assert!(own.iter().all(|l| l.starts_with("own/")));
    let total = result(&url, "lease.list", json!({"prefix": "own", "limit": 1})).await;
    assert_eq!(total["total"], 20);
}

/// `--max-tasks`: a `task.create` past the cap of live tasks is −32003 `max_tasks` and leaves
/// nothing behind — no task, no event; once a task finishes there is room again.
#[tokio::test]
async fn task_create_beyond_max_tasks_is_refused_and_creates_nothing() {
    let config = Config {
        limits: vigil::Limits {
            max_tasks: 3,
            ..vigil::Limits::default()
        },
        ..Config::default()
    };
    let (url, c, _stop) = serve(config, ServerConfig::default()).await;
    let mut events = c.subscribe();
    for i in 0..3 {
        result(&url, "task.create", json!({"text": format!("job {i}")})).await;
    }
    let refused = call(&url, "task.create", json!({"text": "one too many"})).await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert_eq!(refused["error"]["data"]["reason"], "max_tasks");
    assert_eq!(refused["error"]["data"]["limit"], 3);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 live"),
        "{refused}"
    );
    let listed = result(&url, "task.list", json!({})).await;
    assert_eq!(listed["total"], 3);
    assert!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["payload"]["text"] != "one too many")
    );
    assert_eq!(c.live_task_count(), 3);
    let mut created = 0;
    while let Ok(event) = events.try_recv() {
        created += usize::from(event.kind == EventKind::TaskCreated);
    }
    assert_eq!(created, 3, "the refused task published no event");

    // A finished task does not count: complete one and there is room for one more.
    result(
        &url,
        "system.register",
        json!({"roles": ["worker"], "id": "w"}),
    )
    .await;
    let claim = result(&url, "task.claim", json!({"workerId": "w"})).await;
    let done = json!({"taskId": claim["taskId"], "claimToken": claim["claimToken"]});
    result(&url, "task.complete", done).await;
    result(&url, "task.create", json!({"text": "room again"})).await;
    let again = call(&url, "task.create", json!({"text": "full again"})).await;
    assert_eq!(again["error"]["code"], -32003, "{again}");
    assert_eq!(c.task_counts()["completed"], 1);
    assert_eq!(c.live_task_count(), 3);
}
