//! A tool's arguments, read one by one so that every refusal names the argument (rmcp's own
//! deserialization would only say "failed to deserialize parameters"). Lenient where an agent
//! is likely to slip and the meaning is unambiguous (`"900"` for `900`, `17.0` for `17`, `null`
//! for an absent argument), strict everywhere else; an argument the tool does not take is
//! refused, so a misspelt `stepId` never silently falls back to the environment's step.

use serde_json::{Map, Value};

use crate::rpc::RpcError;

/// The arguments of one call.
#[derive(Debug)]
pub(crate) struct Args {
    map: Map<String, Value>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A refusal of argument `name`.
pub(crate) fn bad(name: &str, reason: impl Into<String>) -> RpcError {
    RpcError::invalid_params(name, reason)
}

impl Args {
    /// `map`, refusing any argument not in `known`.
    pub fn new(map: Map<String, Value>, known: &[&str]) -> Result<Self, RpcError> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let takes = if known.is_empty() {
                "no arguments".to_string()
            } else {
                known.join(", ")
            };
            return Err(bad(
                unknown,
                format!("unknown argument; this tool takes {takes}"),
            ));
        }
        Ok(Self { map })
    }

    /// The value of `name`; `null` counts as absent.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// Whether `name` was given (not null).
    pub fn has(&self, name: &str) -> bool {
        self.value(name).is_some()
    }

    /// An optional string.
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, RpcError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(bad(name, format!("must be a string, got {}", kind(v)))),
        }
    }

    /// A required, non-empty string.
    pub fn str(&self, name: &str) -> Result<&str, RpcError> {
        match self.opt_str(name)? {
            Some("") => Err(bad(name, "must not be empty")),
            Some(s) => Ok(s),
            None => Err(bad(name, "is required")),
        }
    }

    /// An optional integer within `min..=max`: a JSON integer, a float with no fraction, or a
    /// string holding one.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, RpcError> {
        let Some(v) = self.value(name) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(n) => Err(bad(name, format!("must be within {min}..={max}, got {n}"))),
            None => Err(bad(name, format!("must be an integer, got {v}"))),
        }
    }

    /// An optional list of strings.
    pub fn opt_strings(&self, name: &str) -> Result<Option<Vec<String>>, RpcError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(bad(
                        &format!("{name}[{i}]"),
                        format!("must be a string, got {}", kind(v)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(bad(
                name,
                format!("must be an array of strings, got {}", kind(v)),
            )),
        }
    }
}

/// A step id: `17`, `"17"` or `"t-17"` → 17. `name` is the argument (or environment
/// variable) it came from, for the error.
pub(crate) fn step_id_of(name: &str, v: &Value) -> Result<u64, RpcError> {
    let reason = || format!("must be a step id: an integer such as 17, or \"t-17\"; got {v}");
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| bad(name, reason())),
        Value::String(s) => {
            let s = s.trim();
            let digits = s.strip_prefix("t-").unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(name, reason()));
            }
            digits.parse().map_err(|_| bad(name, reason()))
        }
        _ => Err(bad(name, reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Args {
        let Value::Object(map) = v else { panic!() };
        Args::new(map, &["a", "n", "s", "l"]).unwrap()
    }

    #[test]
    fn step_ids_in_every_accepted_spelling() {
        for (v, n) in [
            (json!(17), 17),
            (json!("17"), 17),
            (json!("t-17"), 17),
            (json!(" t-3 "), 3),
            (json!(4.0), 4),
        ] {
            assert_eq!(step_id_of("step_id", &v).unwrap(), n, "{v}");
        }
        for v in [
            json!("t-"),
            json!("x-1"),
            json!(-1),
            json!(1.5),
            json!(true),
            json!([1]),
            json!("t-1x"),
            json!("99999999999999999999999"),
        ] {
            let e = step_id_of("step_id", &v).unwrap_err();
            assert_eq!(e.data.as_ref().unwrap()["field"], "step_id", "{v}");
            assert!(e.message.contains("step_id"), "{}", e.message);
        }
    }

    #[test]
    fn unknown_arguments_and_wrong_types_name_the_argument() {
        let Value::Object(map) = json!({"stepId": 1}) else {
            panic!()
        };
        let e = Args::new(map, &["step_id"]).unwrap_err();
        assert_eq!(e.data.unwrap()["field"], "stepId");
        let a = args(json!({"n": "12", "s": 3, "l": ["x", 1], "a": null}));
        assert_eq!(a.opt_int("n", 0, 100).unwrap(), Some(12));
        assert!(a.opt_int("n", 0, 10).unwrap_err().message.contains("n:"));
        assert_eq!(a.opt_str("s").unwrap_err().data.unwrap()["field"], "s");
        assert_eq!(
            a.opt_strings("l").unwrap_err().data.unwrap()["field"],
            "l[1]"
        );
        assert_eq!(a.opt_str("a").unwrap(), None);
        assert_eq!(a.str("a").unwrap_err().data.unwrap()["field"], "a");
    }
}
