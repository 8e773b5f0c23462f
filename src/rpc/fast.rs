//! The heartbeat fast path of the JSON-RPC decoder.
//!
//! Heartbeats are most of the traffic, and the general decoder spends far more on building
//! `serde_json::Value` trees (a map per request, one per params object, one per answer) than
//! the coordinator spends on the heartbeat itself. For a request that is exactly a well-formed
//! `system.heartbeat`, this path borrows the envelope straight from the body (no tree, the id
//! kept as raw JSON text), calls the hot path and writes the answer bytes directly. Anything
//! else — another method, a malformed envelope, a missing parameter — returns `None` and takes
//! the general path, which produces the same answers and the same errors; tests pin that the
//! two agree.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::Dispatcher;

/// Present (even as `null`) → `Some`; absent → `None` via `#[serde(default)]`.
fn present<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HeartbeatParams<'a> {
    #[serde(borrow, rename = "instanceId")]
    instance_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

/// What the fast path made of one request.
pub(super) enum Fast {
    /// The answer's bytes.
    Answer(Vec<u8>),
    /// A notification: nothing to send.
    Silent,
}

/// Fast-path heartbeats of one body, counted locally and recorded once.
#[derive(Debug, Default)]
pub(super) struct Tally {
    ok: u64,
    errors: u64,
    took: std::time::Duration,
}

impl Tally {
    pub(super) fn add(&mut self, ok: bool, took: std::time::Duration) {
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        self.took += took;
    }
}

impl Dispatcher {
    /// Records the heartbeats of one body in the counters behind `GET /metrics` and
    /// `system.metrics`.
    pub(super) fn record_tally(&self, tally: &Tally) {
        if tally.ok + tally.errors == 0 {
            return;
        }
        self.heartbeat_metrics.ok.increment(tally.ok);
        self.stats.record_many(
            super::stats::HEARTBEAT,
            tally.ok + tally.errors,
            tally.errors,
            tally.took,
        );
    }

    /// Handles `raw` if it is a plain `system.heartbeat`; `None` sends it down the general path.
    /// Its outcome is added to `tally` (recorded once per body by the caller: a batch of 100
    /// heartbeats touches the shared counters once, not 100 times).
    pub(super) fn fast_heartbeat(&self, raw: &[u8], tally: &mut Tally) -> Option<Fast> {
        if self.coordinator.heartbeats_write_through() {
            return None; // each heartbeat awaits its store write: the general path
        }
        let envelope: Envelope<'_> = serde_json::from_slice(raw).ok()?;
        if envelope.jsonrpc.as_deref() != Some("2.0")
            || envelope.method.as_deref() != Some("system.heartbeat")
        {
            return None;
        }
        let params: HeartbeatParams<'_> = serde_json::from_str(envelope.params?.get()).ok()?;
        let instance = params.instance_id.or(params.id)?;
        if instance.is_empty() {
            return None; // −32602 from the general path
        }
        let id = match envelope.id {
            None => None,
            Some(raw) => {
                // Only the id kinds JSON-RPC allows; anything else gets the general error.
                let first = raw.get().as_bytes().first().copied()?;
                if !(first == b'"' || first == b'-' || first == b'n' || first.is_ascii_digit()) {
                    return None;
                }
                Some(raw.get())
            }
        };
        let started = std::time::Instant::now();
        // Ownership first: another principal's refused heartbeat must not spend the instance's
        // rate-limit budget.
        let refused = match (
            &self.guard,
            self.coordinator.may_act_as(&instance, &self.authority),
        ) {
            (_, Err(e)) => Some(super::RpcError::from(e)),
            (Some(guard), Ok(())) => guard.check("system.heartbeat", Some(&instance)).err(),
            (None, Ok(())) => None,
        };
        let beat = match refused {
            None => self
                .coordinator
                .heartbeat_now_as(&instance, &self.authority)
                .map_err(super::RpcError::from),
            Some(e) => Err(e),
        };
        let beat = match beat {
            Ok(beat) => beat,
            Err(e) => {
                let took = started.elapsed();
                super::metrics::record(
                    "system.heartbeat",
                    super::metrics::outcome_label(Err(&e)),
                    took,
                );
                tally.add(false, took);
                let id = id?; // a refused notification is dropped silently
                let error = serde_json::to_vec(&e.to_value()).ok()?;
                let mut out = Vec::with_capacity(64 + error.len());
                out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"error\":");
                out.extend_from_slice(&error);
                out.extend_from_slice(b",\"id\":");
                out.extend_from_slice(id.as_bytes());
                out.push(b'}');
                return Some(Fast::Answer(out));
            }
        };
        let took = started.elapsed();
        self.heartbeat_metrics.duration.record(took.as_secs_f64());
        tally.add(true, took);
        let Some(id) = id else {
            return Some(Fast::Silent);
        };
        let mut out = Vec::with_capacity(96 + id.len());
        let _ = write!(
            out,
            "{{\"jsonrpc\":\"2.0\",\"result\":{{\"alive\":{},\"isLeader\":{},\"term\":{}}},\"id\":{}}}",
            beat.alive, beat.is_leader, beat.term.0, id
        );
        Some(Fast::Answer(out))
    }

    /// Handles a whole body and returns the bytes to send (`None`: nothing). Heartbeats, alone
    /// or in batches, take the fast path; everything else the general one. The response stays
    /// within the byte budget ([`RpcLimits::max_answer_bytes`](super::RpcLimits)): an answer of
    /// a read-only call that would take it past is replaced by the −32005 error.
    pub async fn handle_body_bytes(&self, body: &[u8]) -> Option<Vec<u8>> {
        let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
        match first {
            Some(b'{') => {
                let mut tally = Tally::default();
                let fast = self.fast_heartbeat(body, &mut tally);
                self.record_tally(&tally);
                match fast {
                    Some(Fast::Answer(bytes)) => Some(bytes),
                    Some(Fast::Silent) => None,
                    None => self.general(body).await,
                }
            }
            Some(b'[') => {
                let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
                    return self.general(body).await;
                };
                if items.is_empty() || items.len() > self.limits.max_batch {
                    return self.general(body).await;
                }
                let budget = self.limits.max_answer_bytes;
                let mut out = Vec::with_capacity(items.len() * 80 + 2);
                out.push(b'[');
                let mut any = false;
                let mut tally = Tally::default();
                for item in items {
                    let mark = out.len();
                    if any {
                        out.push(b',');
                    }
                    let start = out.len();
                    match self.fast_heartbeat(item.get().as_bytes(), &mut tally) {
                        Some(Fast::Answer(bytes)) => out.extend_from_slice(&bytes),
                        Some(Fast::Silent) => {}
                        None => {
                            let answered = match serde_json::from_str(item.get()) {
                                Ok(value) => self.answer(value).await,
                                Err(_) => None,
                            };
                            if let Some(answered) = answered {
                                // A `Value` written to a `Vec` cannot fail.
                                let _ = serde_json::to_writer(&mut out, &answered.answer);
                                // `+ 1`: the closing bracket.
                                if let Some(method) = answered.reads
                                    && out.len() + 1 > budget
                                {
                                    // Written whole first (its size is known only then), taken
                                    // back: the error goes in its place.
                                    let bytes = out.len() - start;
                                    out.truncate(start);
                                    let error = self.over_budget(&answered.answer, method, bytes);
                                    let _ = serde_json::to_writer(&mut out, &error);
                                }
                            }
                        }
                    }
                    if out.len() == start {
                        out.truncate(mark); // nothing to send for this one: no comma either
                    } else {
                        any = true;
                    }
                }
                self.record_tally(&tally);
                out.push(b']');
                any.then_some(out)
            }
            _ => self.general(body).await,
        }
    }

    /// One request (or a refused batch) by the general decoder, as bytes.
    async fn general(&self, body: &[u8]) -> Option<Vec<u8>> {
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
            // A parse error, a refused batch, a bare value: small errors.
            return self
                .handle_body(body)
                .await
                .and_then(|v| serde_json::to_vec(&v).ok());
        };
        let answered = self.answer(Value::Object(request)).await?;
        let bytes = serde_json::to_vec(&answered.answer).ok()?;
        match answered.reads {
            Some(method) if bytes.len() > self.limits.max_answer_bytes => {
                let error = self.over_budget(&answered.answer, method, bytes.len());
                serde_json::to_vec(&error).ok()
            }
            _ => Some(bytes),
        }
    }
}
