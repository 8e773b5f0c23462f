//! Binary heartbeat frames: the fast path for high-rate clients over WebSocket.
//!
//! A client sends one binary frame holding a [`HeartbeatFrame`] — a sequence number and the
//! ids of the instances it heartbeats for — and gets back one binary frame holding an
//! [`AnswerFrame`]: the same sequence number and one [`BeatResult`] per id, in order. Both are
//! encoded with bincode 2's standard configuration (little-endian, variable-length integers),
//! a format any language can write by hand; docs/api.md spells out the bytes.
//!
//! Decoding borrows the ids straight out of the frame, so a frame of a thousand heartbeats
//! costs one allocation for the id list and one for the answer.

use std::borrow::Cow;
use std::time::Instant;

use bincode::{BorrowDecode, Decode, Encode};

use super::{Dispatcher, code, metrics};

/// The format version, first byte of every frame.
pub const VERSION: u8 = 1;

/// Largest number of bytes a decoder will set aside for one frame's contents.
const DECODE_LIMIT: usize = 16 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// A client's frame: heartbeats for `instance_ids`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, BorrowDecode)]
pub struct HeartbeatFrame<'a> {
    /// Must be [`VERSION`].
    pub version: u8,
    /// Chosen by the client, echoed in the answer.
    pub seq: u64,
    /// The instances, at most the server's batch limit (default 1000).
    pub instance_ids: Vec<Cow<'a, str>>,
}

impl<'a> HeartbeatFrame<'a> {
    /// A frame of the current version.
    pub fn new(seq: u64, instance_ids: Vec<Cow<'a, str>>) -> Self {
        Self {
            version: VERSION,
            seq,
            instance_ids,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("encoding into a Vec cannot fail")
    }

    /// Reads a frame, borrowing the ids from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, bincode::error::DecodeError> {
        let (frame, _) = bincode::borrow_decode_from_slice(bytes, config())?;
        Ok(frame)
    }
}

/// What one heartbeat of a frame got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum BeatResult {
    /// Answered, as `system.heartbeat` answers: `alive` false for an unknown or dead instance.
    Beat {
        /// Registered and alive (and now refreshed).
        alive: bool,
        /// Leads in `term`.
        is_leader: bool,
        /// The current term.
        term: u64,
    },
    /// Refused by the per-instance rate limit; nothing changed.
    RateLimited {
        /// When the next heartbeat will be accepted.
        retry_after_ms: u64,
    },
    /// Refused: the instance is bound to another principal (−32002 on the JSON path); nothing
    /// changed.
    Forbidden,
}

/// The server's answer to one binary frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AnswerFrame {
    /// One result per id, in the frame's order.
    Results {
        /// Must be [`VERSION`].
        version: u8,
        /// The frame's sequence number.
        seq: u64,
        /// The results.
        results: Vec<BeatResult>,
    },
    /// The whole frame was refused (undecodable, wrong version, too many ids); nothing changed.
    Error {
        /// Must be [`VERSION`].
        version: u8,
        /// The frame's sequence number, 0 when it could not be read.
        seq: u64,
        /// A JSON-RPC error code (−32700 undecodable, −32600 wrong version or too many ids).
        code: i64,
        /// What was wrong.
        message: String,
    },
}

impl AnswerFrame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("encoding into a Vec cannot fail")
    }

    /// Reads an answer.
    pub fn decode(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (frame, _) = bincode::decode_from_slice(bytes, config())?;
        Ok(frame)
    }

    fn error(seq: u64, code: i64, message: String) -> Self {
        Self::Error {
            version: VERSION,
            seq,
            code,
            message,
        }
    }
}

impl Dispatcher {
    /// Answers one binary heartbeat frame (see the [module docs](self)).
    pub async fn handle_binary(&self, bytes: &[u8]) -> AnswerFrame {
        let frame = match HeartbeatFrame::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                return AnswerFrame::error(
                    0,
                    code::PARSE_ERROR,
                    format!("undecodable heartbeat frame: {e}"),
                );
            }
        };
        if frame.version != VERSION {
            return AnswerFrame::error(
                frame.seq,
                code::INVALID_REQUEST,
                format!(
                    "unsupported frame version {}, this server speaks {VERSION}",
                    frame.version
                ),
            );
        }
        let n = frame.instance_ids.len();
        if n > self.limits.max_batch {
            return AnswerFrame::error(
                frame.seq,
                code::INVALID_REQUEST,
                format!(
                    "a frame may hold at most {} heartbeats, got {n}",
                    self.limits.max_batch
                ),
            );
        }
        // ClaudeBench's `instanceId: z.string().min(1)`: an empty id refuses the frame, as
        // the JSON path refuses the call (−32602).
        if let Some(i) = frame.instance_ids.iter().position(|id| id.is_empty()) {
            return AnswerFrame::error(
                frame.seq,
                code::INVALID_PARAMS,
                format!("instanceIds[{i}]: must be at least 1 character long"),
            );
        }
        if self.coordinator.ensure_active().is_err() {
            // Deposed (high availability): as −32008 on the JSON paths; nothing recorded.
            return AnswerFrame::error(
                frame.seq,
                code::NOT_ACTIVE,
                "not the active coordinator".to_string(),
            );
        }
        let write_through = self.coordinator.heartbeats_write_through();
        let mut results = Vec::with_capacity(n);
        let mut tally = super::fast::Tally::default();
        for id in &frame.instance_ids {
            let started = Instant::now();
            // Ownership first: another principal's refused heartbeat must not spend the
            // instance's rate-limit budget.
            if let Err(e) = self.coordinator.may_act_as(id, &self.authority) {
                metrics::record(
                    "system.heartbeat",
                    metrics::outcome_label(Err(&super::RpcError::from(e))),
                    started.elapsed(),
                );
                tally.add(false, started.elapsed());
                results.push(BeatResult::Forbidden);
                continue;
            }
            if let Some(guard) = &self.guard
                && let Err(e) = guard.check("system.heartbeat", Some(id))
            {
                metrics::record(
                    "system.heartbeat",
                    metrics::outcome_label(Err(&e)),
                    started.elapsed(),
                );
                tally.add(false, started.elapsed());
                let retry_after_ms = e
                    .data
                    .as_ref()
                    .and_then(|d| d.get("retryAfterMs"))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(1);
                results.push(BeatResult::RateLimited { retry_after_ms });
                continue;
            }
            let beat = if write_through {
                self.coordinator.heartbeat_as(id, &self.authority).await
            } else {
                self.coordinator.heartbeat_now_as(id, &self.authority)
            };
            let beat = match beat {
                Ok(beat) => beat,
                Err(e) => {
                    metrics::record(
                        "system.heartbeat",
                        metrics::outcome_label(Err(&super::RpcError::from(e))),
                        started.elapsed(),
                    );
                    tally.add(false, started.elapsed());
                    results.push(BeatResult::Forbidden);
                    continue;
                }
            };
            let took = started.elapsed();
            self.heartbeat_metrics.duration.record(took.as_secs_f64());
            tally.add(true, took);
            results.push(BeatResult::Beat {
                alive: beat.alive,
                is_leader: beat.is_leader,
                term: beat.term.0,
            });
        }
        self.record_tally(&tally);
        AnswerFrame::Results {
            version: VERSION,
            seq: frame.seq,
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented bytes: a hand-written frame decodes, and encoding gives the same bytes.
    #[test]
    fn wire_format_matches_the_docs() {
        let bytes = [1u8, 7, 2, 2, b'w', b'1', 3, b'w', b'-', b'2'];
        let frame = HeartbeatFrame::decode(&bytes).unwrap();
        assert_eq!(
            frame,
            HeartbeatFrame::new(7, vec!["w1".into(), "w-2".into()])
        );
        assert!(matches!(frame.instance_ids[0], Cow::Borrowed(_)));
        assert_eq!(frame.encode(), bytes);
        // seq 300 is a varint: 251 then u16 little-endian.
        let big = HeartbeatFrame::new(300, vec![]).encode();
        assert_eq!(big, [1, 251, 0x2c, 0x01, 0]);
        let answer = AnswerFrame::Results {
            version: 1,
            seq: 7,
            results: vec![
                BeatResult::Beat {
                    alive: true,
                    is_leader: false,
                    term: 3,
                },
                BeatResult::RateLimited { retry_after_ms: 40 },
            ],
        };
        assert_eq!(answer.encode(), [0, 1, 7, 2, 0, 1, 0, 3, 1, 40]);
        assert_eq!(AnswerFrame::decode(&answer.encode()).unwrap(), answer);
    }

    #[test]
    fn a_length_prefix_beyond_the_frame_is_an_error_not_an_allocation() {
        // version 1, seq 0, then an id count of 2^40 (varint tag 253 + u64).
        let mut bytes = vec![1u8, 0, 253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(HeartbeatFrame::decode(&bytes).is_err());
    }
}
