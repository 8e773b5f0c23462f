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

/// A string borrowed from the body unless it has escapes (serde's `borrow` does not reach into
/// an `Option`: a plain `Option<Cow<str>>` always allocates); `null` → `None`.
fn borrowed<'de, D>(d: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D>(self, d: D) -> Result<Self::Value, D::Error>
        where
            D: serde::Deserializer<'de>,
        {
            d.deserialize_str(self)
        }
    }
    d.deserialize_option(Text)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HeartbeatParams<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed", rename = "instanceId")]
    instance_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    id: Option<Cow<'a, str>>,
}

/// `{"jsonrpc":"2.0","result":{"alive":…,"isLeader":…,"term":…},"id":…}`, written by hand
/// into a vector of exactly its length (so that `Bytes::from` takes it without another
/// allocation).
fn heartbeat_answer(alive: bool, is_leader: bool, term: u64, id: &str) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"jsonrpc\":\"2.0\",\"result\":{\"alive\":";
    const LEADER: &[u8] = b",\"isLeader\":";
    const TERM: &[u8] = b",\"term\":";
    const ID: &[u8] = b"},\"id\":";
    let flag = |b: bool| if b { &b"true"[..] } else { &b"false"[..] };
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = term;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let term = &digits[start..];
    let parts: [&[u8]; 9] = [
        HEAD,
        flag(alive),
        LEADER,
        flag(is_leader),
        TERM,
        term,
        ID,
        id.as_bytes(),
        b"}",
    ];
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The instance and the raw id (`None`: a notification) of `raw` if it is a `system.heartbeat`
/// request: read by [`scan`] when it can, by serde otherwise. `None` sends it down the general
/// path.
fn heartbeat_request(raw: &[u8]) -> Option<(Cow<'_, str>, Option<&str>)> {
    match scan(raw) {
        Some(Scanned { instance, id }) => Some((Cow::Borrowed(instance), id)),
        None => parse(raw),
    }
}

/// [`heartbeat_request`] by serde: any JSON the general decoder accepts.
fn parse(raw: &[u8]) -> Option<(Cow<'_, str>, Option<&str>)> {
    let envelope: Envelope<'_> = serde_json::from_slice(raw).ok()?;
    if envelope.jsonrpc.as_deref() != Some("2.0")
        || envelope.method.as_deref() != Some("system.heartbeat")
    {
        return None;
    }
    let params: HeartbeatParams<'_> = serde_json::from_str(envelope.params?.get()).ok()?;
    let instance = params.instance_id.or(params.id)?;
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
    Some((instance, id))
}

/// A heartbeat request as [`scan`] read it.
#[derive(Debug, PartialEq, Eq)]
struct Scanned<'a> {
    instance: &'a str,
    id: Option<&'a str>,
}

/// Reads the common shape of a heartbeat request by hand, in one pass and without allocating:
/// an object of the members `jsonrpc`, `method`, `params` (an object of `instanceId` and/or
/// `id`, strings) and optionally `id` (a string, an integer or `null`), each at most once, in
/// any order, with any JSON whitespace; strings of printable ASCII without escapes. Anything
/// else — another member, an escape, a number with a fraction, a byte past the object — is
/// `None`, and serde reads it ([`parse`]); where `scan` answers, it answers as [`parse`]
/// does (a property test pins it). What serde spent on this shape was a sixth of a request's
/// instructions on the server.
fn scan(raw: &[u8]) -> Option<Scanned<'_>> {
    // Checked once, as text: then every piece is sliced from it without another check.
    let text = std::str::from_utf8(raw).ok()?;
    let mut at = Cursor {
        text,
        bytes: raw,
        at: 0,
    };
    let (mut jsonrpc, mut method, mut instance, mut id) = (None, None, None, None);
    at.object(|key, at| {
        match key {
            "jsonrpc" if jsonrpc.is_none() => jsonrpc = Some(at.string()?),
            "method" if method.is_none() => method = Some(at.string()?),
            "id" if id.is_none() => id = Some(at.id()?),
            "params" if instance.is_none() => {
                let (mut instance_id, mut other_id) = (None, None);
                at.object(|key, at| {
                    match key {
                        "instanceId" if instance_id.is_none() => instance_id = Some(at.string()?),
                        "id" if other_id.is_none() => other_id = Some(at.string()?),
                        _ => return None,
                    }
                    Some(())
                })?;
                instance = Some(instance_id.or(other_id)?);
            }
            _ => return None,
        }
        Some(())
    })?;
    at.whitespace();
    if at.at != raw.len() || jsonrpc? != "2.0" || method? != "system.heartbeat" {
        return None;
    }
    Some(Scanned {
        instance: instance?,
        id,
    })
}

/// A position in a request's bytes, for [`scan`].
struct Cursor<'a> {
    text: &'a str,
    /// `text`'s bytes.
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.whitespace();
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// An object: `member` reads each value after its key (and returns `None` to give up).
    fn object(&mut self, mut member: impl FnMut(&'a str, &mut Self) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            member(key, self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string of printable ASCII without escapes, its contents.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let length = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b))?;
        self.at = start + length;
        // Not an escape, a control character (whitespace included) or a non-ASCII one.
        (self.bytes.get(self.at) == Some(&b'"')).then(|| self.at += 1)?;
        self.text.get(start..start + length)
    }

    /// An id: a string as [`Self::string`] reads it, an integer, or `null`; its raw text.
    fn id(&mut self) -> Option<&'a str> {
        let start = match self.peek()? {
            b'"' => {
                let start = self.at;
                self.string()?;
                start
            }
            b'n' => {
                let start = self.at;
                self.bytes[start..].starts_with(b"null").then_some(())?;
                self.at += 4;
                start
            }
            _ => {
                let start = self.at;
                if self.bytes.get(self.at) == Some(&b'-') {
                    self.at += 1;
                }
                match *self.bytes.get(self.at)? {
                    b'0' => self.at += 1,
                    b'1'..=b'9' => {
                        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
                            self.at += 1;
                        }
                    }
                    _ => return None,
                }
                // A fraction, an exponent or a digit after a leading zero is not followed by
                // `,`, `}` or whitespace, which makes the object give up: serde's to judge.
                start
            }
        };
        self.text.get(start..self.at)
    }
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
        let (instance, id) = heartbeat_request(raw)?;
        if instance.is_empty() {
            return None; // −32602 from the general path
        }
        let started = std::time::Instant::now();
        // Ownership first: another principal's refused heartbeat must not spend the instance's
        // rate-limit budget.
        let refused = match (
            &self.guard,
            self.coordinator
                .ensure_active()
                .and_then(|()| self.coordinator.may_act_as(&instance, &self.authority)),
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
        Some(Fast::Answer(heartbeat_answer(
            beat.alive,
            beat.is_leader,
            beat.term.0,
            id,
        )))
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
                    // Boxed: the general path's future is large, and inline it would make
                    // this one (which a server boxes per request) as large.
                    None => Box::pin(self.general(body)).await,
                }
            }
            Some(b'[') => {
                let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
                    return Box::pin(self.general(body)).await;
                };
                if items.is_empty() || items.len() > self.limits.max_batch {
                    return Box::pin(self.general(body)).await;
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
                                Ok(value) => Box::pin(self.answer(value)).await,
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
            _ => Box::pin(self.general(body)).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Where the hand-written reader answers, serde answers the same.
    fn agrees(raw: &[u8]) -> Result<(), TestCaseError> {
        if let Some(Scanned { instance, id }) = scan(raw) {
            let by_serde = parse(raw);
            prop_assert_eq!(
                by_serde,
                Some((Cow::Borrowed(instance), id)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        Ok(())
    }

    #[test]
    fn the_common_shapes_are_scanned() {
        let shapes: [(&str, &str, Option<&str>); 7] = [
            (
                r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"worker-1"},"id":1}"#,
                "worker-1",
                Some("1"),
            ),
            (
                r#"{"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w"}, "id": "a-1"}"#,
                "w",
                Some(r#""a-1""#),
            ),
            (
                "{\n  \"id\": null,\n  \"params\": {\"id\": \"w\"},\n  \"method\": \"system.heartbeat\",\n  \"jsonrpc\": \"2.0\"\n}\n",
                "w",
                Some("null"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"}}"#,
                "w",
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"id":"b","instanceId":"a"},"id":-12}"#,
                "a",
                Some("-12"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":""},"id":0}"#,
                "",
                Some("0"),
            ),
            (
                r#"{"params":{"instanceId":"w"},"jsonrpc":"2.0","id":123456789012345678901234,"method":"system.heartbeat"}"#,
                "w",
                Some("123456789012345678901234"),
            ),
        ];
        for (raw, instance, id) in shapes {
            assert_eq!(
                scan(raw.as_bytes()),
                Some(Scanned { instance, id }),
                "{raw}"
            );
            agrees(raw.as_bytes()).unwrap();
        }
        // Left to serde: escapes, other members, fractions, leading zeros, non-ASCII, a
        // duplicate, bytes after the object, another method or version.
        for raw in [
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w\u0031"},"id":1}"#,
            "{\"jsonrpc\":\"2.0\",\"method\":\"system.heartbeat\",\"params\":{\"instanceId\":\"w\t\"},\"id\":1}",
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w","x":1},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"},"id":1,"x":1}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"},"id":1.5}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"},"id":01}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"é"},"id":1}"#,
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"}}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"}} x"#,
            r#"{"jsonrpc":"2.0","method":"system.health","params":{"instanceId":"w"},"id":1}"#,
            r#"{"jsonrpc":"1.0","method":"system.heartbeat","params":{"instanceId":"w"},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":null},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w"},"id":[1]}"#,
        ] {
            assert_eq!(scan(raw.as_bytes()), None, "{raw}");
        }
    }

    const KEYS: &[&str] = &[
        r#""jsonrpc""#,
        r#""method""#,
        r#""params""#,
        r#""id""#,
        r#""instanceId""#,
        r#""extra""#,
        r#""\u0069d""#,
    ];

    const VALUES: &[&str] = &[
        r#""2.0""#,
        r#""1.0""#,
        r#""system.heartbeat""#,
        r#""system.health""#,
        r#""sys\u0074em.heartbeat""#,
        "7",
        "-3",
        "0",
        "-0",
        "01",
        "1.5",
        "1e3",
        "-",
        "null",
        "nul",
        "true",
        r#""x""#,
        r#""é""#,
        r#""a\"b""#,
        "[1]",
        "{}",
        r#"{"instanceId":"w1"}"#,
        r#"{"id":"w1"}"#,
        r#"{"instanceId":"w1","id":"w2"}"#,
        r#"{ "id" : "w2" , "instanceId" : "w3" }"#,
        r#"{"instanceId":""}"#,
        r#"{"instanceId":null}"#,
        r#"{"instanceId":5}"#,
        r#"{"instanceId":"w1","extra":1}"#,
        r#"{"instanceId":"w\u0031"}"#,
        r#"{"instanceId":"w1","instanceId":"w2"}"#,
        r#"{"instanceId":"w1",}"#,
    ];

    const PARAMS: &[&str] = &[
        r#"{"instanceId":"w1"}"#,
        r#"{"id":"w1"}"#,
        r#"{"instanceId":"w1","id":"w2"}"#,
        r#"{"id":"w2","instanceId":"w1"}"#,
        r#"{ "id" : "w2" , "instanceId" : "w3" }"#,
        r#"{"instanceId":"","id":"w2"}"#,
        r#"{"instanceId":""}"#,
        r#"{"instanceId":null,"id":"w2"}"#,
        r#"{"instanceId":5}"#,
        r#"{"instanceId":"w1","extra":1}"#,
        r#"{"instanceId":"w\u0031"}"#,
        r#"{"instanceId":"w1","instanceId":"w2"}"#,
        r#"{"id":"w1","id":"w2"}"#,
        r#"{"instanceId":"w1",}"#,
        r#"{"instanceId":"w1""#,
        "{}",
    ];

    const IDS: &[&str] = &[
        "7",
        "-3",
        "0",
        "-0",
        "01",
        "-01",
        "1.5",
        "1e3",
        "12345678901234567890123",
        "null",
        "nul",
        "nullx",
        r#""x""#,
        r#""""#,
        r#""a\"b""#,
        r#""é""#,
        "[1]",
        "{}",
        "true",
    ];

    const SPACE: &[&str] = &["", " ", "\n", "\t ", "\r\n", "\u{a0}"];

    fn envelope() -> impl Strategy<Value = String> {
        let member = (
            0..KEYS.len(),
            0..VALUES.len(),
            0..SPACE.len(),
            0..SPACE.len(),
        );
        (
            prop::collection::vec(member, 0..6),
            0..SPACE.len(),
            prop::sample::select(vec!["", " ", "\n", "x", "}", ","]),
            any::<bool>(),
        )
            .prop_map(|(members, space, tail, comma)| {
                let mut out = format!("{}{{", SPACE[space]);
                for (i, (k, v, a, b)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if comma { "," } else { ";" });
                    }
                    out.push_str(&format!(
                        "{}{}{}:{}{}",
                        SPACE[*a], KEYS[*k], SPACE[*b], SPACE[*a], VALUES[*v]
                    ));
                }
                out.push('}');
                out.push_str(tail);
                out
            })
    }

    /// Envelopes that are nearly heartbeats: the common members, each likely.
    fn near_heartbeat() -> impl Strategy<Value = String> {
        let value =
            |good: &'static str| prop_oneof![4 => Just(good), 1 => prop::sample::select(VALUES)];
        (
            value(r#""2.0""#),
            value(r#""system.heartbeat""#),
            prop::sample::select(PARAMS),
            prop::sample::select(IDS),
            prop::sample::select(vec![[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]]),
            0..5usize,
            0..SPACE.len(),
        )
            .prop_map(|(jsonrpc, method, params, id, order, leave_out, space)| {
                let members = [
                    format!(r#""jsonrpc":{jsonrpc}"#),
                    format!(r#""method":{method}"#),
                    format!(r#""params":{params}"#),
                    format!(r#""id":{id}"#),
                ];
                let chosen: Vec<&str> = order
                    .iter()
                    .filter(|&&i| i != leave_out)
                    .map(|&i| members[i].as_str())
                    .collect();
                format!("{{{}}}", chosen.join(&format!(",{}", SPACE[space])))
            })
    }

    /// Every byte of a heartbeat changed to every other value, one at a time.
    #[test]
    fn scan_agrees_with_serde_on_every_changed_byte() {
        let beat =
            br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":7}"#;
        for at in 0..beat.len() {
            for byte in 0..=u8::MAX {
                let mut raw = beat.to_vec();
                raw[at] = byte;
                agrees(&raw).unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn scan_agrees_with_serde(raw in envelope()) {
            agrees(raw.as_bytes())?;
        }

        #[test]
        fn scan_agrees_with_serde_near_heartbeats(raw in near_heartbeat()) {
            agrees(raw.as_bytes())?;
        }

    }
}
