//! `vigil load`: the load harness (first part: HTTP and in-process transports).
//!
//! It registers `workers` instances (`{prefix}-0 … {prefix}-{N−1}`) and sends heartbeats
//! **open loop**: the i-th call is due at `start + i / rate`, whether or not earlier calls have
//! been answered, and its latency is measured from that *intended* time — so a stall shows up
//! as the latency of every call it delayed (no coordinated omission). `rate = max` is closed
//! loop instead: a fixed number of callers send as fast as answers come back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{Coordinator, RegisterRequest};

/// How calls reach the coordinator.
#[derive(Debug, Clone)]
pub enum Transport {
    /// JSON-RPC over HTTP to `target` (`batch` heartbeats per request; 1 = one per request).
    Http {
        /// Base URL, e.g. `http://127.0.0.1:7420`.
        target: String,
        /// Bearer token.
        token: Option<String>,
        /// Heartbeats per request.
        batch: usize,
    },
    /// An embedded coordinator, no network.
    Inproc(Coordinator),
}

/// Heartbeats per second, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop at this many heartbeats per second.
    PerSecond(f64),
    /// Closed loop, saturating.
    Max,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `1000/min`, `50k/s`, `200/s`, `max`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("a rate is N/s, N/min or max, got {s:?}"))?;
        let (digits, scale) = match n.strip_suffix(['k', 'K']) {
            Some(d) => (d, 1000.0),
            None => (n, 1.0),
        };
        let n: f64 = digits
            .parse()
            .map_err(|_| format!("{n:?} is not a number in rate {s:?}"))?;
        let per = match unit {
            "s" | "sec" => 1.0,
            "min" | "m" => 60.0,
            other => return Err(format!("unknown rate unit {other:?} (s or min)")),
        };
        let rate = n * scale / per;
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(format!("a rate must be positive, got {s:?}"));
        }
        Ok(Rate::PerSecond(rate))
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where calls go.
    pub transport: Transport,
    /// Instances to register and heartbeat for.
    pub workers: usize,
    /// Id prefix.
    pub prefix: String,
    /// Heartbeat rate.
    pub rate: Rate,
    /// How long to send.
    pub duration: Duration,
    /// Calls in flight at most (and callers for `max`).
    pub concurrency: usize,
}

/// Latency percentiles of one method, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Calls measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Transport name.
    pub transport: String,
    /// Heartbeats sent.
    pub sent: u64,
    /// Heartbeats answered without error.
    pub answered: u64,
    /// Heartbeats that failed, by JSON-RPC code (or -1 for a transport failure).
    pub errors: BTreeMap<i64, u64>,
    /// Answers `alive: false`.
    pub alive_false: u64,
    /// The rate asked for (heartbeats/s; `null` for max).
    pub target_rate: Option<f64>,
    /// The rate achieved: for an open loop, the pace actually kept between the first and the
    /// last send; for `max`, sent / elapsed.
    pub achieved_rate: f64,
    /// Seconds spent sending.
    pub elapsed_s: f64,
    /// Latency from intended send time to answer, by method.
    pub latency: BTreeMap<String, Percentiles>,
}

impl LoadReport {
    /// Errors over sent.
    pub fn error_rate(&self) -> f64 {
        let errors: u64 = self.errors.values().sum();
        if self.sent == 0 {
            0.0
        } else {
            errors as f64 / self.sent as f64
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let target = self
            .target_rate
            .map_or("max".to_string(), |r| format!("{r:.1}/s"));
        out.push_str(&format!(
            "transport {}  sent {}  answered {}  errors {}  alive:false {}\n",
            self.transport,
            self.sent,
            self.answered,
            self.errors.values().sum::<u64>(),
            self.alive_false
        ));
        out.push_str(&format!(
            "rate: target {target}, achieved {:.1}/s over {:.2} s\n",
            self.achieved_rate, self.elapsed_s
        ));
        out.push_str(&format!(
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "method", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        for (method, p) in &self.latency {
            let f = |us: u64| {
                if us >= 10_000 {
                    format!("{:.1}ms", us as f64 / 1000.0)
                } else {
                    format!("{us}µs")
                }
            };
            out.push_str(&format!(
                "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                method,
                p.count,
                f(p.p50_us),
                f(p.p90_us),
                f(p.p99_us),
                f(p.p999_us),
                f(p.max_us)
            ));
        }
        for (code, n) in &self.errors {
            out.push_str(&format!("errors {code}: {n}\n"));
        }
        out
    }
}

#[derive(Default)]
struct Tally {
    answered: u64,
    alive_false: u64,
    errors: BTreeMap<i64, u64>,
}

enum Outcome {
    Alive(bool),
    Error(i64),
}

struct Caller {
    transport: Transport,
    http: reqwest::Client,
    ids: Arc<Vec<String>>,
}

impl Caller {
    fn url(target: &str) -> String {
        format!("{}/rpc", target.trim_end_matches('/'))
    }

    async fn post(&self, target: &str, token: &Option<String>, body: Value) -> Result<Value, i64> {
        let mut request = self.http.post(Self::url(target)).json(&body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.map_err(|_| -1)?;
        if !response.status().is_success() {
            return Err(-i64::from(response.status().as_u16()));
        }
        response.json().await.map_err(|_| -1)
    }

    /// Heartbeats for workers `first .. first + n` (wrapping); one outcome each.
    async fn heartbeats(&self, first: usize, n: usize) -> Vec<Outcome> {
        let id = |k: usize| self.ids[(first + k) % self.ids.len()].as_str();
        match &self.transport {
            Transport::Inproc(c) => {
                let mut out = Vec::with_capacity(n);
                for k in 0..n {
                    out.push(Outcome::Alive(c.heartbeat(id(k)).await.alive));
                }
                out
            }
            Transport::Http { target, token, .. } => {
                let call = |k: usize| {
                    json!({"jsonrpc": "2.0", "method": "system.heartbeat",
                           "params": {"instanceId": id(k)}, "id": k})
                };
                let body = if n == 1 {
                    call(0)
                } else {
                    Value::Array((0..n).map(call).collect())
                };
                let answers = match self.post(target, token, body).await {
                    Ok(Value::Array(a)) => a,
                    Ok(one) => vec![one],
                    Err(code) => return (0..n).map(|_| Outcome::Error(code)).collect(),
                };
                let mut out: Vec<Outcome> = answers
                    .iter()
                    .map(
                        |a| match a.pointer("/result/alive").and_then(Value::as_bool) {
                            Some(alive) => Outcome::Alive(alive),
                            None => Outcome::Error(
                                a.pointer("/error/code")
                                    .and_then(Value::as_i64)
                                    .unwrap_or(-1),
                            ),
                        },
                    )
                    .collect();
                // A missing answer is an error too, so sent = answered + errors always holds.
                while out.len() < n {
                    out.push(Outcome::Error(-1));
                }
                out.truncate(n);
                out
            }
        }
    }

    async fn register_all(&self) -> Result<(), String> {
        match &self.transport {
            Transport::Inproc(c) => {
                for id in self.ids.iter() {
                    c.register(RegisterRequest::new(id.as_str()))
                        .await
                        .map_err(|e| format!("registering {id}: {e}"))?;
                }
                Ok(())
            }
            Transport::Http { target, token, .. } => {
                for chunk in self.ids.chunks(500) {
                    let body = Value::Array(
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(k, id)| {
                                json!({"jsonrpc": "2.0", "method": "system.register",
                                       "params": {"id": id, "roles": ["worker"]}, "id": k})
                            })
                            .collect(),
                    );
                    let answer = self
                        .post(target, token, body)
                        .await
                        .map_err(|code| format!("registering workers at {target}: error {code}"))?;
                    if let Some(e) = answer
                        .as_array()
                        .and_then(|a| a.iter().find(|x| x.get("error").is_some()))
                    {
                        return Err(format!("registering workers: {}", e["error"]));
                    }
                }
                Ok(())
            }
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

/// Registers the workers, runs the load, and reports.
pub async fn run(config: LoadConfig) -> Result<LoadReport, String> {
    if config.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let batch = match &config.transport {
        Transport::Http { batch, .. } => (*batch).max(1),
        Transport::Inproc(_) => 1,
    };
    let ids: Vec<String> = (0..config.workers)
        .map(|i| format!("{}-{i}", config.prefix))
        .collect();
    let caller = Arc::new(Caller {
        transport: config.transport.clone(),
        http: reqwest::Client::new(),
        ids: Arc::new(ids),
    });
    caller.register_all().await?;
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut sent: u64 = 0;
    let mut achieved: Option<f64> = None;
    let mut tasks = tokio::task::JoinSet::new();
    let record = {
        let (histogram, tally) = (Arc::clone(&histogram), Arc::clone(&tally));
        move |intended: Instant, outcomes: Vec<Outcome>| {
            let us = intended.elapsed().as_micros().max(1) as u64;
            let mut h = histogram.lock();
            let mut t = tally.lock();
            for o in outcomes {
                let _ = h.record(us.min(60_000_000));
                match o {
                    Outcome::Alive(alive) => {
                        t.answered += 1;
                        t.alive_false += u64::from(!alive);
                    }
                    Outcome::Error(code) => *t.errors.entry(code).or_default() += 1,
                }
            }
        }
    };
    match config.rate {
        Rate::PerSecond(rate) => {
            let per_request = batch as f64 / rate;
            let mut i: u64 = 0;
            let mut first_send: Option<Instant> = None;
            let mut last_send = start;
            loop {
                let intended = start + Duration::from_secs_f64(i as f64 * per_request);
                if intended >= deadline {
                    break;
                }
                // tokio's timer has millisecond resolution: sleep to within a millisecond of
                // the intended time, then yield until it, so the harness's own lateness does
                // not show up as the server's latency. Behind schedule, send at once.
                if let Some(early) = intended.checked_sub(Duration::from_millis(1))
                    && early > Instant::now()
                {
                    tokio::time::sleep_until(early).await;
                }
                while Instant::now() < intended {
                    tokio::task::yield_now().await;
                }
                let now = Instant::now();
                first_send.get_or_insert(now);
                last_send = now;
                let permit = Arc::clone(&permits)
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?;
                let (caller, record) = (Arc::clone(&caller), record.clone());
                let first = (i as usize * batch) % caller.ids.len();
                tasks.spawn(async move {
                    let outcomes = caller.heartbeats(first, batch).await;
                    record(intended, outcomes);
                    drop(permit);
                });
                sent += batch as u64;
                i += 1;
                while tasks.try_join_next().is_some() {}
            }
            // The pace actually kept: requests sent over the span between the first and the
            // last send, one interval per gap.
            if let Some(first) = first_send
                && i > 1
            {
                let span = (last_send - first).as_secs_f64();
                achieved = Some((i - 1) as f64 * batch as f64 / span.max(1e-9));
            }
        }
        Rate::Max => {
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            for k in 0..config.concurrency.max(1) {
                let (caller, record, counter) =
                    (Arc::clone(&caller), record.clone(), Arc::clone(&counter));
                tasks.spawn(async move {
                    let mut next = k * batch;
                    while Instant::now() < deadline {
                        let intended = Instant::now();
                        let outcomes = caller.heartbeats(next, batch).await;
                        counter.fetch_add(batch as u64, std::sync::atomic::Ordering::Relaxed);
                        record(intended, outcomes);
                        next += batch * 64;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            sent = counter.load(std::sync::atomic::Ordering::Relaxed);
        }
    }
    let elapsed = start.elapsed().max(config.duration).as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let t = std::mem::take(&mut *tally.lock());
    let mut latency = BTreeMap::new();
    latency.insert(
        "system.heartbeat".to_string(),
        percentiles(&histogram.lock()),
    );
    Ok(LoadReport {
        transport: match &config.transport {
            Transport::Http { batch: 1, .. } => "http".into(),
            Transport::Http { batch, .. } => format!("http (batch {batch})"),
            Transport::Inproc(_) => "inproc".into(),
        },
        sent,
        answered: t.answered,
        errors: t.errors,
        alive_false: t.alive_false,
        target_rate: match config.rate {
            Rate::PerSecond(r) => Some(r),
            Rate::Max => None,
        },
        achieved_rate: achieved.unwrap_or(sent as f64 / elapsed.max(1e-9)),
        elapsed_s: elapsed,
        latency,
    })
}

/// A latency objective: `p99=5ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Quantile, e.g. 0.99.
    pub quantile: f64,
    /// Bound.
    pub bound: Duration,
}

impl std::str::FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, bound) = s
            .split_once('=')
            .ok_or_else(|| format!("an SLO is pNN=DURATION, e.g. p99=5ms, got {s:?}"))?;
        let quantile = match p {
            "p50" => 0.5,
            "p90" => 0.9,
            "p99" => 0.99,
            "p99.9" | "p999" => 0.999,
            "max" => 1.0,
            other => {
                return Err(format!(
                    "unknown percentile {other:?} (p50, p90, p99, p99.9, max)"
                ));
            }
        };
        let bound = humantime::parse_duration(bound)
            .map_err(|e| format!("{bound:?} is not a duration: {e}"))?;
        Ok(Slo { quantile, bound })
    }
}

impl Slo {
    /// Whether `report` meets it (every method).
    pub fn met_by(&self, report: &LoadReport) -> bool {
        report.latency.values().all(|p| {
            let us = match self.quantile {
                q if q >= 1.0 => p.max_us,
                q if q >= 0.999 => p.p999_us,
                q if q >= 0.99 => p.p99_us,
                q if q >= 0.9 => p.p90_us,
                _ => p.p50_us,
            };
            us as u128 <= self.bound.as_micros()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_slos_parse() {
        assert_eq!(
            "1000/min".parse::<Rate>().unwrap(),
            Rate::PerSecond(1000.0 / 60.0)
        );
        assert_eq!("50k/s".parse::<Rate>().unwrap(), Rate::PerSecond(50_000.0));
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10/h".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        let slo: Slo = "p99=5ms".parse().unwrap();
        assert_eq!(slo.quantile, 0.99);
        assert_eq!(slo.bound, Duration::from_millis(5));
        assert!("p42=1ms".parse::<Slo>().is_err());
    }
}
