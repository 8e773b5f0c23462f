//! The Redis store: the key layout of docs/persistence.md, every multi-key change a Lua script
//! (the `.lua` files beside this one), scripts loaded once and called with EVALSHA — reloaded
//! after NOSCRIPT, pipelines included — and recovery with SCAN and pipelined reads.

use std::collections::HashMap;
use std::sync::Arc;

use redis::aio::ConnectionManagerConfig;
use redis::{Cmd, Pipeline, Value};

mod conn;
pub(in crate::store) mod wait;
pub(super) use conn::Conn;

use super::fields::{self, INSTANCE_TEXT, LEASE_TEXT, TASK_TEXT};
use super::{
    Applied, BoxFuture, Counters, FENCED, HeartbeatWrite, InstanceRecord, NOT_REPLICATED,
    RedisConfig, Snapshot, Store, StoreError, TermRecord, WriteBatch,
};
use crate::events::Event;
use crate::model::{Epoch, InstanceId, Term};
use crate::work::records::{LeaseRecord, TaskRecord};

/// Most commands in one pipeline, and most instances in one heartbeat-flush script call.
pub const BATCH: usize = 1000;

/// One Lua script: its source and SHA1.
#[derive(Debug)]
struct Script {
    name: &'static str,
    source: std::borrow::Cow<'static, str>,
    sha: String,
}

/// The fencing prelude ([`fence.lua`](lua/fence.lua)) every write script starts with.
const FENCE_PRELUDE: &str = include_str!("lua/fence.lua");

impl Script {
    fn new(name: &'static str, source: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        let source = source.into();
        Self {
            name,
            sha: redis::Script::new(&source).get_hash().to_string(),
            source,
        }
    }

    /// A write script: the fencing prelude, then `body`. Called with [`RedisStore::fenced`].
    fn fenced(name: &'static str, body: &'static str) -> Self {
        Self::new(name, format!("{FENCE_PRELUDE}{body}"))
    }

    /// `EVALSHA sha numkeys keys... args...`
    fn call(&self, keys: &[String], args: impl IntoIterator<Item = String>) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys);
        for a in args {
            cmd.arg(a);
        }
        cmd
    }
}

#[derive(Debug)]
struct Scripts {
    instance_put: Script,
    instance_gone: Script,
    heartbeats: Script,
    task_put: Script,
    task_gone: Script,
    lease_put: Script,
    lease_gone: Script,
    term: Script,
    counters: Script,
    term_reserve: Script,
    events: Script,
    flush_mark: Script,
    cb_events: Script,
    dump: Script,
}

impl Scripts {
    fn new() -> Self {
        macro_rules! script {
            ($name:literal) => {
                Script::new($name, include_str!(concat!("lua/", $name, ".lua")))
            };
        }
        macro_rules! fenced {
            ($name:literal) => {
                Script::fenced($name, include_str!(concat!("lua/", $name, ".lua")))
            };
        }
        Self {
            instance_put: fenced!("instance_put"),
            instance_gone: fenced!("instance_gone"),
            heartbeats: fenced!("heartbeats"),
            task_put: fenced!("task_put"),
            task_gone: fenced!("task_gone"),
            lease_put: fenced!("lease_put"),
            lease_gone: fenced!("lease_gone"),
            term: fenced!("term"),
            counters: fenced!("counters"),
            term_reserve: fenced!("term_reserve"),
            events: fenced!("events"),
            flush_mark: fenced!("flush_mark"),
            cb_events: fenced!("cb_events"),
            dump: script!("dump"),
        }
    }

    fn all(&self) -> [&Script; 14] {
        [
            &self.instance_put,
            &self.instance_gone,
            &self.heartbeats,
            &self.task_put,
            &self.task_gone,
            &self.lease_put,
            &self.lease_gone,
            &self.term,
            &self.counters,
            &self.term_reserve,
            &self.events,
            &self.flush_mark,
            &self.cb_events,
            &self.dump,
        ]
    }
}

/// Key names under a prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    /// `{p}instance:{id}`
    pub fn instance(&self, id: &str) -> String {
        format!("{}instance:{id}", self.prefix)
    }
    /// `{p}instances:active`
    pub fn active(&self) -> String {
        format!("{}instances:active", self.prefix)
    }
    /// `{p}task:{id}`
    pub fn task(&self, id: &str) -> String {
        format!("{}task:{id}", self.prefix)
    }
    /// `{p}queue:tasks:pending`
    pub fn pending(&self) -> String {
        format!("{}queue:tasks:pending", self.prefix)
    }
    /// `{p}lease:{key}`
    pub fn lease(&self, key: &str) -> String {
        format!("{}lease:{key}", self.prefix)
    }
    /// `{p}leader:term`, `{p}leader:current`, `{p}leader:epoch`
    pub fn leader(&self) -> [String; 3] {
        ["term", "current", "epoch"].map(|k| format!("{}leader:{k}", self.prefix))
    }
    /// `{p}meta:counters`
    pub fn counters(&self) -> String {
        format!("{}meta:counters", self.prefix)
    }
    /// `{p}coordinator`: the coordinator lease and its epoch, which fences every write.
    pub fn coordinator(&self) -> String {
        format!("{}coordinator", self.prefix)
    }
    /// `{p}stream:events`
    pub fn stream(&self) -> String {
        format!("{}stream:events", self.prefix)
    }
    /// `{p}stream:{type}`: ClaudeBench's stream of the events of one type.
    pub fn type_stream(&self, kind: &str) -> String {
        format!("{}stream:{kind}", self.prefix)
    }
    /// A SCAN pattern for every key under the prefix, its glob characters escaped.
    fn pattern_all(&self) -> String {
        let mut out = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        format!("{out}*")
    }
    fn strip<'a>(&self, key: &'a str, kind: &str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(kind)?
            .strip_prefix(':')
    }
}

/// The Redis store.
#[derive(Debug, Clone)]
pub struct RedisStore {
    /// A fixed server's connection, or the primary's under Sentinel (it follows failovers).
    connection: Conn,
    scripts: Arc<Scripts>,
    keys: Keys,
    stream_max_len: usize,
    /// Cap of each per-type stream (0: none written).
    type_stream_max_len: usize,
    /// Whether events are PUBLISHed on their type's channel.
    publish_events: bool,
    /// Added to an instance record's remaining TTL to give its key's lifetime.
    retention_ms: u64,
    /// `{p}coordinator`, the first key of every write script.
    fence_key: String,
    /// The coordinator epoch this store writes under ([`RedisConfig::fence_epoch`]), `''` for
    /// none (no check).
    fence: String,
    /// The replicas a write that a caller waits on must reach ([`RedisConfig::wait_replicas`]).
    replicas: Arc<wait::Replicas>,
}

fn fail(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {e}"))
}

fn flatten(fields: Vec<(String, String)>) -> impl Iterator<Item = String> {
    fields.into_iter().flat_map(|(k, v)| [k, v])
}

impl RedisStore {
    /// Connects (the server must be reachable now) and loads the scripts.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        let scripts = Arc::new(Scripts::new());
        let sources = scripts.all().iter().map(|s| s.source.to_string()).collect();
        let connection = Conn::open(
            &config.url,
            manager_config,
            sources,
            config.response_timeout * 3,
        )
        .await
        .map_err(StoreError)?;
        let store = Self {
            connection,
            scripts,
            keys: Keys::new(config.prefix.clone()),
            stream_max_len: config.stream_max_len.max(1),
            type_stream_max_len: config.type_stream_max_len,
            publish_events: config.publish_events,
            retention_ms: config.record_retention.as_millis() as u64,
            fence_key: Keys::new(config.prefix.clone()).coordinator(),
            fence: config
                .fence_epoch
                .map(|e| e.to_string())
                .unwrap_or_default(),
            replicas: Arc::new(wait::Replicas::new(
                config.wait_replicas,
                config.wait_timeout,
            )),
        };
        store.load_scripts().await?;
        // `auto`: how many replicas there are now (then at most every few seconds).
        store.replicas_to_wait().await;
        Ok(store)
    }

    /// How many replicas the next awaited write must reach (0: no `WAIT`). A fixed number as
    /// configured; `auto` from `INFO replication`, read again only when the last answer is
    /// stale (see [`wait`]).
    async fn replicas_to_wait(&self) -> u32 {
        let generation = self.connection.generation();
        if let Some(n) = self.replicas.known(generation) {
            return n;
        }
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.connection.clone())
            .await;
        let connected = match info {
            Ok(info) => {
                let n = wait::online_replicas(&info);
                if n.is_none() {
                    tracing::warn!(
                        "INFO replication lists no connected_slaves; the replicas to wait for \
                         stay as they were"
                    );
                }
                n
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read INFO replication; the replicas to wait for stay as they were \
                     (set --ha-wait-replicas to a number if INFO is not allowed)"
                );
                None
            }
        };
        self.replicas.learned(connected, generation)
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for s in self.scripts.all() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(s.source.as_ref());
        }
        let shas: Vec<String> = pipe
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail("SCRIPT LOAD", e))?;
        for (s, sha) in self.scripts.all().iter().zip(shas) {
            if s.sha != sha {
                return Err(StoreError(format!(
                    "script {} loaded as {sha}, expected {}",
                    s.name, s.sha
                )));
            }
        }
        Ok(())
    }

    /// Runs `cmds` in pipelines of at most [`BATCH`]; a NOSCRIPT reply (the server lost its
    /// script cache: restart, SCRIPT FLUSH) reloads the scripts and runs the pipeline again,
    /// which is safe because every script writes whole states.
    async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        self.run_waiting(cmds, 0).await
    }

    /// [`run`](Self::run), then, with `replicas` > 0, `WAIT replicas timeout` as the last
    /// command of the last pipeline, on the same connection: `WAIT` counts the replicas that
    /// acknowledged everything this connection wrote before it, so it covers every chunk. A
    /// reply below `replicas` is a `NOT_REPLICATED k/n in t ms` error
    /// ([`StoreError::is_not_replicated`]); the values returned never include `WAIT`'s.
    async fn run_waiting(&self, cmds: Vec<Cmd>, replicas: u32) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::with_capacity(cmds.len());
        let chunks = cmds.chunks(BATCH).count();
        for (n, chunk) in cmds.chunks(BATCH).enumerate() {
            let wait = (replicas > 0 && n + 1 == chunks).then_some(replicas);
            let mut pipe = Pipeline::with_capacity(chunk.len() + 1);
            for cmd in chunk {
                pipe.add_command(cmd.clone());
            }
            if let Some(replicas) = wait {
                pipe.cmd("WAIT")
                    .arg(replicas)
                    .arg(self.replicas.timeout_ms());
            }
            let mut reloaded = false;
            loop {
                let started = std::time::Instant::now();
                match pipe
                    .query_async::<Vec<Value>>(&mut self.connection.clone())
                    .await
                {
                    Ok(mut values) => {
                        if let Some(asked) = wait {
                            let reply = values.pop();
                            self.check_replicated(reply, asked, started)?;
                        }
                        out.extend(values);
                        break;
                    }
                    Err(e) if self.fence.is_empty() || fenced_by(&e).is_none() => {
                        if !reloaded
                            && e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                        {
                            tracing::info!("redis lost its scripts; loading them again");
                            self.load_scripts().await?;
                            reloaded = true;
                            continue;
                        }
                        return Err(fail("pipeline", e));
                    }
                    // Refused by the fencing check, before the NOSCRIPT retry: another
                    // coordinator took over, and no retry can succeed.
                    Err(e) => {
                        let (refused, stored) = fenced_by(&e).unwrap_or_default();
                        return Err(StoreError(format!(
                            "{FENCED}store epoch is {stored}, ours {}; {refused} of {} writes refused",
                            self.fence,
                            chunk.len()
                        )));
                    }
                }
            }
        }
        Ok(out)
    }

    /// `WAIT`'s `reply` to a pipeline sent at `started`, asking for `asked` replicas: an error
    /// naming the numbers when fewer acknowledged.
    fn check_replicated(
        &self,
        reply: Option<Value>,
        asked: u32,
        started: std::time::Instant,
    ) -> Result<(), StoreError> {
        let acked: i64 = reply
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| fail("WAIT (reply)", e))?
            .ok_or_else(|| StoreError("WAIT: no reply".into()))?;
        if acked >= i64::from(asked) {
            return Ok(());
        }
        self.replicas.fell_short();
        Err(StoreError(format!(
            "{NOT_REPLICATED}{acked}/{asked} in {} ms: the primary has the write, but only \
             {acked} of the {asked} replicas asked for confirmed it within the WAIT timeout \
             ({} ms)",
            started.elapsed().as_millis(),
            self.replicas.timeout_ms()
        )))
    }

    /// `EVALSHA` of a write script: the fence key before `keys`, our epoch (or `''`) before
    /// `args`, which the script's prelude checks and removes.
    fn fenced(
        &self,
        script: &Script,
        keys: &[String],
        args: impl IntoIterator<Item = String>,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&script.sha)
            .arg(keys.len() + 1)
            .arg(&self.fence_key)
            .arg(keys)
            .arg(&self.fence);
        for a in args {
            cmd.arg(a);
        }
        cmd
    }

    fn instance_put(&self, record: &InstanceRecord, expire_in_ms: u64) -> Cmd {
        let id = record.id.as_str();
        let mut f = fields::to_fields(record, INSTANCE_TEXT);
        f.push((
            "lastHeartbeat".into(),
            crate::work::task::iso_ms(record.last_seen_ms),
        ));
        self.fenced(
            &self.scripts.instance_put,
            &[self.keys.instance(id), self.keys.active()],
            [
                id.to_string(),
                (expire_in_ms.max(1) + self.retention_ms).to_string(),
            ]
            .into_iter()
            .chain(flatten(f)),
        )
    }

    /// One heartbeats script call for `beats`, recording `flush_mark` as `lastFlush` too.
    fn heartbeat_cmd(&self, beats: &[HeartbeatWrite], flush_mark: Option<u64>) -> Cmd {
        let keys: Vec<String> = std::iter::once(self.keys.counters())
            .chain(beats.iter().map(|b| self.keys.instance(b.id.as_str())))
            .collect();
        let mark = flush_mark.map(|at| at.to_string()).unwrap_or_default();
        let args = std::iter::once(mark).chain(beats.iter().flat_map(|b| {
            [
                b.last_seen_ms.to_string(),
                crate::work::task::iso_ms(b.last_seen_ms),
                b.status.as_str().to_string(),
                (b.expire_in_ms.max(1) + self.retention_ms).to_string(),
            ]
        }));
        self.fenced(&self.scripts.heartbeats, &keys, args)
    }

    fn task_put(&self, record: &TaskRecord) -> Cmd {
        let id = record.id.to_string();
        let mut f = fields::to_fields(record, TASK_TEXT);
        // ClaudeBench's names, for its tooling: the holder or the assigned instance, the text.
        if let Some((who, _)) = record.assignee.as_ref().or(record.reserved_for.as_ref()) {
            f.push(("assignedTo".into(), who.to_string()));
        }
        f.push(("text".into(), crate::work::task::text_of(&record.payload)));
        let score = match record.status {
            crate::work::task::TaskStatus::Pending => record.pending_score().to_string(),
            _ => String::new(),
        };
        self.fenced(
            &self.scripts.task_put,
            &[self.keys.task(&id), self.keys.pending()],
            [id, score].into_iter().chain(flatten(f)),
        )
    }

    fn lease_put(&self, record: &LeaseRecord, expire_in_ms: u64) -> Cmd {
        let f = vec![
            ("key".to_string(), record.key.as_str().to_string()),
            (
                "grants".to_string(),
                serde_json::to_string(&record.grants).unwrap_or_else(|_| "[]".into()),
            ),
            ("expiresAt".to_string(), record.expires_at_ms().to_string()),
        ];
        self.fenced(
            &self.scripts.lease_put,
            &[self.keys.lease(record.key.as_str())],
            std::iter::once(expire_in_ms.max(1).to_string()).chain(flatten(f)),
        )
    }

    fn commands(&self, batch: &WriteBatch) -> (Vec<Cmd>, Vec<usize>) {
        let mut cmds = Vec::new();
        // The counters first: a pipeline runs in order, so should it be cut off half-way (the
        // connection lost), no record it wrote carries an epoch, task id or fencing token above
        // the stored counters, which recovery continues past.
        if let Some(c) = &batch.counters {
            let mut args = vec![
                "lastTask".to_string(),
                c.work.last_task.to_string(),
                "lastFencingToken".to_string(),
                c.work.last_fencing_token.to_string(),
                "lastEpoch".to_string(),
                c.last_epoch.to_string(),
            ];
            if c.term_reserved > 0 {
                // Normally written by `reserve_terms` already; rewritten so that a Redis that
                // came back empty gets the ceiling back with everything else.
                args.extend(["termReserved".to_string(), c.term_reserved.to_string()]);
            }
            cmds.push(self.fenced(&self.scripts.counters, &[self.keys.counters()], args));
        }
        for (record, expire) in &batch.instances {
            cmds.push(self.instance_put(record, *expire));
        }
        for id in &batch.instances_gone {
            cmds.push(self.fenced(
                &self.scripts.instance_gone,
                &[self.keys.instance(id.as_str()), self.keys.active()],
                [id.to_string()],
            ));
        }
        // Positions of the heartbeat script calls, whose replies list missing records.
        let mut heartbeat_calls = Vec::new();
        let chunks = batch.heartbeats.chunks(BATCH).count();
        for (n, chunk) in batch.heartbeats.chunks(BATCH).enumerate() {
            heartbeat_calls.push(cmds.len());
            // The flush mark rides with the last chunk: one script call per flush tick.
            let mark = batch.flush_mark.filter(|_| n + 1 == chunks);
            cmds.push(self.heartbeat_cmd(chunk, mark));
        }
        for record in &batch.tasks {
            cmds.push(self.task_put(record));
        }
        for id in &batch.tasks_gone {
            let id = id.to_string();
            cmds.push(self.fenced(
                &self.scripts.task_gone,
                &[self.keys.task(&id), self.keys.pending()],
                [id],
            ));
        }
        for (record, expire) in &batch.leases {
            cmds.push(self.lease_put(record, *expire));
        }
        for key in &batch.leases_gone {
            cmds.push(self.fenced(
                &self.scripts.lease_gone,
                &[self.keys.lease(key.as_str())],
                [],
            ));
        }
        if let Some(term) = &batch.term {
            cmds.push(
                self.fenced(
                    &self.scripts.term,
                    &self.keys.leader(),
                    [
                        term.term.0.to_string(),
                        term.leader
                            .as_ref()
                            .map(|l| l.to_string())
                            .unwrap_or_default(),
                        term.epoch.map(|e| e.0.to_string()).unwrap_or_default(),
                    ],
                ),
            );
        }
        if let Some(at) = batch.flush_mark.filter(|_| batch.heartbeats.is_empty()) {
            // Recovery reads it to bound lost heartbeats. Written with the heartbeats when any;
            // alone (a tick that moved none) a fenced script, or without fencing the plain
            // command it always was (one key, nothing to check).
            if self.fence.is_empty() {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(self.keys.counters()).arg("lastFlush").arg(at);
                cmds.push(cmd);
            } else {
                cmds.push(self.fenced(
                    &self.scripts.flush_mark,
                    &[self.keys.counters()],
                    [at.to_string()],
                ));
            }
        }
        for chunk in batch.events.chunks(500) {
            let args = std::iter::once(self.stream_max_len.to_string()).chain(
                chunk.iter().flat_map(|e| {
                    [
                        e.kind.as_str().to_string(),
                        serde_json::to_string(e).unwrap_or_default(),
                    ]
                }),
            );
            cmds.push(self.fenced(&self.scripts.events, &[self.keys.stream()], args));
        }
        self.claudebench_events(&batch.events, &mut cmds);
        (cmds, heartbeat_calls)
    }

    /// Where ClaudeBench's tools listen: each event's envelope
    /// ([`claudebench_envelope`](crate::events::claudebench_envelope)) appended to its type's
    /// capped stream `{p}stream:<type>` (field `data`) and PUBLISHed on the channel named by its
    /// type, after the writes of the state it describes (a pipeline runs in order).
    fn claudebench_events(&self, events: &[Event], cmds: &mut Vec<Cmd>) {
        if self.type_stream_max_len == 0 && !self.publish_events {
            return;
        }
        for event in events {
            let kind = event.kind.as_str();
            let envelope = crate::events::claudebench_envelope(event).to_string();
            // One fenced script call per event: XADD (if kept) then PUBLISH (if on).
            let keys = if self.type_stream_max_len > 0 {
                vec![self.keys.type_stream(kind)]
            } else {
                Vec::new()
            };
            let channel = if self.publish_events { kind } else { "" };
            cmds.push(self.fenced(
                &self.scripts.cb_events,
                &keys,
                [
                    self.type_stream_max_len.to_string(),
                    channel.to_string(),
                    envelope,
                ],
            ));
        }
    }

    async fn apply_batch(&self, batch: &WriteBatch) -> Result<Applied, StoreError> {
        let (cmds, heartbeat_calls) = self.commands(batch);
        if cmds.is_empty() {
            return Ok(Applied::default());
        }
        let replicas = if awaited(batch) {
            self.replicas_to_wait().await
        } else {
            0
        };
        let replies = self.run_waiting(cmds, replicas).await?;
        let mut applied = Applied::default();
        for (n, at) in heartbeat_calls.into_iter().enumerate() {
            let missing: Vec<usize> = replies
                .get(at)
                .cloned()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            for i in missing {
                if let Some(beat) = batch.heartbeats.get(n * BATCH + i - 1) {
                    applied.missing_instances.push(beat.id.clone());
                }
            }
        }
        Ok(applied)
    }

    /// Every key under the prefix, by kind (`instance`, `task`, `lease`), in one SCAN walk
    /// of the keyspace (a walk per kind would visit every key three times).
    async fn scan(&self) -> Result<HashMap<&'static str, Vec<String>>, StoreError> {
        let pattern = self.keys.pattern_all();
        let mut cursor: u64 = 0;
        let mut keys: HashMap<&'static str, Vec<String>> = HashMap::new();
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10 * BATCH)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(|e| fail("SCAN", e))?;
            for key in page {
                for kind in ["instance", "task", "lease"] {
                    if self.keys.strip(&key, kind).is_some() {
                        keys.entry(kind).or_default().push(key);
                        break;
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for list in keys.values_mut() {
            list.sort();
            list.dedup(); // SCAN may return a key twice
        }
        Ok(keys)
    }

    /// Every key's hash, read with the `dump` script [`BATCH`] keys per call, several calls
    /// per pipeline. A key that is not a hash is listed in `skipped` (and left alone); a failed
    /// read is an error naming `what` was being read.
    async fn hashes(
        &self,
        what: &str,
        keys: &[String],
        skipped: &mut Vec<(String, String)>,
    ) -> Result<Vec<(String, HashMap<String, String>)>, StoreError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Fields(Vec<String>),
            Empty(#[allow(dead_code)] serde_json::Map<String, serde_json::Value>),
            Error(String),
        }
        let chunks: Vec<&[String]> = keys.chunks(BATCH).collect();
        // A few calls per round trip: each runs ~10 ms in Redis, and a round trip must stay
        // well inside the response timeout.
        let mut replies = Vec::with_capacity(chunks.len());
        for group in chunks.chunks(8) {
            let cmds = group
                .iter()
                .map(|chunk| self.scripts.dump.call(chunk, []))
                .collect();
            let read = self
                .run(cmds)
                .await
                .map_err(|e| StoreError(format!("reading the {what} records: {}", e.0)))?;
            replies.extend(read);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (chunk, reply) in chunks.into_iter().zip(replies) {
            let text: String = redis::from_redis_value(reply)
                .map_err(|e| fail(&format!("reading the {what} records (dump)"), e))?;
            let entries: Vec<Entry> = serde_json::from_str(&text)
                .map_err(|e| fail(&format!("reading the {what} records (dump reply)"), e))?;
            for (key, entry) in chunk.iter().zip(entries) {
                match entry {
                    Entry::Fields(flat) if flat.is_empty() => {} // expired since SCAN
                    Entry::Fields(flat) => {
                        let mut map = HashMap::with_capacity(flat.len() / 2);
                        let mut it = flat.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            map.insert(k, v);
                        }
                        out.push((key.clone(), map));
                    }
                    Entry::Empty(_) => {}
                    Entry::Error(e) => skipped.push((key.clone(), e)),
                }
            }
        }
        Ok(out)
    }

    /// Reads the whole state back for recovery.
    ///
    /// What fails the load, and with it the start: any read that fails (connection, timeout, a
    /// key of the wrong type among `instances:active`, `leader:*`, `meta:counters` and the
    /// event stream), and a term or counter that does not parse. Those guard what must never be
    /// handed out twice — epochs, task ids, fencing tokens, terms — and taking an unreadable one
    /// for "none stored" would start them over. What is skipped and reported instead: a single
    /// malformed instance, task or lease record (or one of the wrong type, or filed under
    /// another record's key), an invalid id in `instances:active`, an unreadable
    /// `leader:current` / `leader:epoch` (recovery does not use them), an event that does not
    /// parse. Skipped records stay in the store untouched, and the counters, written before
    /// any record in every flush, already cover what they hold.
    async fn load_all(&self, recent_events: usize) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        let mut scanned = self.scan().await?;
        let keys = scanned.remove("instance").unwrap_or_default();
        for (key, map) in self.hashes("instance", &keys, &mut snap.skipped).await? {
            match fields::from_fields::<InstanceRecord>(map, INSTANCE_TEXT) {
                Ok(r) if self.keys.strip(&key, "instance") == Some(r.id.as_str()) => {
                    snap.instances.push(r)
                }
                Ok(r) => snap
                    .skipped
                    .push((key, format!("holds the record of {}", r.id))),
                Err(e) => snap.skipped.push((key, e)),
            }
        }
        // Ids whose record is there but unreadable: not "lapsed" (which would delete it).
        let unreadable: std::collections::HashSet<String> = snap
            .skipped
            .iter()
            .filter_map(|(key, _)| self.keys.strip(key, "instance").map(str::to_string))
            .collect();
        let active_key = self.keys.active();
        let active: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&active_key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail(&format!("reading {active_key} (SMEMBERS)"), e))?;
        let found: std::collections::HashSet<&str> =
            snap.instances.iter().map(|r| r.id.as_str()).collect();
        let limits = crate::config::Limits::default();
        let mut lapsed = Vec::new();
        for id in active {
            if found.contains(id.as_str()) || unreadable.contains(&id) {
                continue;
            }
            match InstanceId::parse(&id, &limits) {
                Ok(id) => lapsed.push(id),
                Err(e) => snap
                    .skipped
                    .push((active_key.clone(), format!("{id:?}: {e}"))),
            }
        }
        snap.lapsed = lapsed;
        let keys = scanned.remove("task").unwrap_or_default();
        for (key, map) in self.hashes("task", &keys, &mut snap.skipped).await? {
            match fields::from_fields::<TaskRecord>(map, TASK_TEXT) {
                Ok(r) if self.keys.strip(&key, "task") == Some(r.id.to_string().as_str()) => {
                    snap.tasks.push(r)
                }
                Ok(r) => snap
                    .skipped
                    .push((key, format!("holds the record of task {}", r.id))),
                Err(e) => snap.skipped.push((key, e)),
            }
        }
        let keys = scanned.remove("lease").unwrap_or_default();
        for (key, map) in self.hashes("lease", &keys, &mut snap.skipped).await? {
            match fields::from_fields::<LeaseRecord>(map, LEASE_TEXT) {
                Ok(r) if self.keys.strip(&key, "lease") == Some(r.key.as_str()) => {
                    snap.leases.push(r)
                }
                Ok(r) => snap
                    .skipped
                    .push((key, format!("holds the record of lease {}", r.key.as_str()))),
                Err(e) => snap.skipped.push((key, e)),
            }
        }
        snap.term = self.load_term(&mut snap.skipped).await?;
        snap.counters = self.load_counters().await?;
        if recent_events > 0 {
            let stream = self.keys.stream();
            let raw: Value = redis::cmd("XREVRANGE")
                .arg(&stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(recent_events)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(|e| fail(&format!("reading {stream} (XREVRANGE)"), e))?;
            snap.events = parse_events(raw, &stream, &mut snap.skipped)?;
            snap.events.reverse();
        }
        Ok(snap)
    }

    /// `leader:term` (a term that does not parse is an error), with `leader:current` and
    /// `leader:epoch` (reported and dropped if unreadable: recovery does not use them).
    async fn load_term(
        &self,
        skipped: &mut Vec<(String, String)>,
    ) -> Result<Option<TermRecord>, StoreError> {
        let [term_key, current_key, epoch_key] = self.keys.leader();
        let (term, current, epoch): (Option<String>, Option<String>, Option<String>) =
            redis::pipe()
                .get(&term_key)
                .get(&current_key)
                .get(&epoch_key)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(|e| {
                    fail(
                        &format!("reading {term_key}, {current_key}, {epoch_key}"),
                        e,
                    )
                })?;
        let Some(term) = term else {
            return Ok(None);
        };
        let term: u64 = term
            .parse()
            .map_err(|e| StoreError(format!("{term_key} holds {term:?}, not a term: {e}")))?;
        let leader = current.and_then(|c| {
            InstanceId::parse(&c, &crate::config::Limits::default())
                .map_err(|e| skipped.push((current_key.clone(), format!("{c:?}: {e}"))))
                .ok()
        });
        let epoch = epoch.and_then(|e| {
            e.parse()
                .map_err(|err| skipped.push((epoch_key.clone(), format!("{e:?}: {err}"))))
                .ok()
        });
        Ok(Some(TermRecord {
            term: Term(term),
            leader,
            epoch: epoch.map(Epoch),
        }))
    }

    /// `meta:counters`. A field that is missing counts as 0 (nothing handed out yet); one that
    /// does not parse is an error.
    async fn load_counters(&self) -> Result<Counters, StoreError> {
        let key = self.keys.counters();
        let counters: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail(&format!("reading {key} (HGETALL)"), e))?;
        let get = |field: &str| -> Result<u64, StoreError> {
            match counters.get(field) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|e| {
                    StoreError(format!(
                        "{key} field {field} holds {v:?}, not a counter: {e}"
                    ))
                }),
            }
        };
        Ok(Counters {
            work: crate::work::records::WorkCounters {
                last_task: get("lastTask")?,
                last_fencing_token: get("lastFencingToken")?,
            },
            last_epoch: get("lastEpoch")?,
            last_flush_ms: get("lastFlush")?,
            term_reserved: get("termReserved")?,
        })
    }

    async fn reserve(&self, ceiling: u64) -> Result<u64, StoreError> {
        let key = self.keys.counters();
        let cmd = self.fenced(
            &self.scripts.term_reserve,
            std::slice::from_ref(&key),
            [ceiling.to_string()],
        );
        let replicas = self.replicas_to_wait().await;
        let reply = self.run_waiting(vec![cmd], replicas).await.map_err(|e| {
            if e.is_fenced() || e.is_not_replicated() {
                e
            } else {
                StoreError(format!("reserving terms up to {ceiling}: {}", e.0))
            }
        })?;
        let stored: String = reply
            .into_iter()
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| fail("reserving terms (reply)", e))?
            .ok_or_else(|| StoreError("reserving terms: no reply".into()))?;
        stored.parse().map_err(|e| {
            StoreError(format!(
                "{key} field termReserved holds {stored:?}, not a term: {e}"
            ))
        })
    }
}

/// Whether a caller may wait on `batch`, so that it is followed by `WAIT` for replicas: it
/// holds records (instances, tasks, leases, the term, the counters) marked by the journal.
/// Heartbeat timestamps, the flush mark and events alone are written behind: no `WAIT`.
fn awaited(batch: &WriteBatch) -> bool {
    !(batch.instances.is_empty()
        && batch.instances_gone.is_empty()
        && batch.tasks.is_empty()
        && batch.tasks_gone.is_empty()
        && batch.leases.is_empty()
        && batch.leases_gone.is_empty()
        && batch.term.is_none()
        && batch.counters.is_none())
}

/// Whether `e` (one reply or a pipeline's) holds `FENCED` replies: how many, and the epoch
/// stored in Redis that the first one names.
fn fenced_by(e: &redis::RedisError) -> Option<(usize, String)> {
    let errors = e.clone().into_server_errors()?;
    let mut fenced = errors.iter().filter(|(_, err)| err.code() == "FENCED");
    let stored = fenced.next()?.1.details().unwrap_or("none").to_string();
    Some((1 + fenced.count(), stored))
}

/// Events from an XREVRANGE reply of `stream`; an entry that does not parse is listed in
/// `skipped` (by its entry id) and left out.
fn parse_events(
    raw: Value,
    stream: &str,
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<Event>, StoreError> {
    let entries: Vec<Value> =
        redis::from_redis_value(raw).map_err(|e| fail(&format!("reading {stream}"), e))?;
    let mut events = Vec::with_capacity(entries.len());
    for (n, entry) in entries.into_iter().enumerate() {
        let parsed = redis::from_redis_value::<(String, HashMap<String, String>)>(entry)
            .map_err(|e| (format!("entry {n} from the newest"), e.to_string()))
            .and_then(|(id, fields)| {
                let data = fields
                    .get("data")
                    .ok_or_else(|| (id.clone(), "no data field".to_string()))?;
                serde_json::from_str::<Event>(data).map_err(|e| (id, e.to_string()))
            });
        match parsed {
            Ok(event) => events.push(event),
            Err((entry, why)) => skipped.push((format!("{stream} {entry}"), why)),
        }
    }
    Ok(events)
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn generation(&self) -> u64 {
        self.connection.generation()
    }

    fn apply<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(self.apply_batch(batch))
    }

    fn heartbeat<'a>(&'a self, beat: &'a HeartbeatWrite) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.run(vec![self.heartbeat_cmd(std::slice::from_ref(beat), None)])
                .await
                .map(|_| ())
        })
    }

    fn load(&self, recent_events: usize) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(self.load_all(recent_events))
    }

    fn reserve_terms(&self, ceiling: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.reserve(ceiling))
    }
}
