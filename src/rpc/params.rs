//! Named parameters with aliases (`id` / `instanceId`, `taskId` / `id` / `stepId` / `step_id`)
//! and errors that name the field and the rule.
//!
//! Unknown parameters are ignored: ClaudeBench clients send extra fields (`sessionId`,
//! `timestamp`) that Vigil has no use for.

use serde_json::{Map, Value};

use super::RpcError;
use crate::model::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use crate::work::task::TaskId;

/// The `params` object of a request.
#[derive(Debug, Clone, Default)]
pub struct Params(Map<String, Value>);

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Params {
    /// Wraps a params object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The names of every parameter given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The first of `names` present with a non-null value, with the name it was found under.
    pub fn find(&self, names: &[&'static str]) -> Option<(&'static str, &Value)> {
        names
            .iter()
            .find_map(|n| self.0.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    fn missing(names: &[&'static str]) -> RpcError {
        let reason = if names.len() > 1 {
            format!("is required (also accepted as {})", names[1..].join(", "))
        } else {
            "is required".to_string()
        };
        RpcError::invalid_params(names[0], reason)
    }

    /// An optional string.
    pub fn opt_str(&self, names: &[&'static str]) -> Result<Option<&str>, RpcError> {
        match self.find(names) {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((name, v)) => Err(RpcError::invalid_params(
                name,
                format!("must be a string, got {}", type_name(v)),
            )),
        }
    }

    /// A required string.
    pub fn str(&self, names: &[&'static str]) -> Result<&str, RpcError> {
        self.opt_str(names)?.ok_or_else(|| Self::missing(names))
    }

    /// A required string of at least one character (ClaudeBench's `z.string().min(1)`): an
    /// empty one is −32602, not a lookup of nobody.
    pub fn non_empty_str(&self, names: &[&'static str]) -> Result<&str, RpcError> {
        self.opt_non_empty_str(names)?
            .ok_or_else(|| Self::missing(names))
    }

    /// An optional string that, when present, has at least one character.
    pub fn opt_non_empty_str(&self, names: &[&'static str]) -> Result<Option<&str>, RpcError> {
        match self.find(names) {
            Some((name, Value::String(s))) if s.is_empty() => Err(RpcError::invalid_params(
                name,
                "must be at least 1 character long",
            )),
            _ => self.opt_str(names),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, names: &[&'static str]) -> Result<Option<bool>, RpcError> {
        match self.find(names) {
            None => Ok(None),
            Some((_, Value::Bool(b))) => Ok(Some(*b)),
            Some((name, v)) => Err(RpcError::invalid_params(
                name,
                format!("must be a boolean, got {}", type_name(v)),
            )),
        }
    }

    /// An optional number (any JSON number).
    pub fn opt_number(&self, names: &[&'static str]) -> Result<Option<f64>, RpcError> {
        match self.find(names) {
            None => Ok(None),
            Some((_, Value::Number(n))) => Ok(n.as_f64()),
            Some((name, v)) => Err(RpcError::invalid_params(
                name,
                format!("must be a number, got {}", type_name(v)),
            )),
        }
    }

    /// An optional non-negative integer within `max`.
    pub fn opt_u64(&self, names: &[&'static str], max: u64) -> Result<Option<u64>, RpcError> {
        match self.find(names) {
            None => Ok(None),
            Some((name, v)) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                Some(n) => Err(RpcError::invalid_params(
                    name,
                    format!("must be at most {max}, got {n}"),
                )),
                None => Err(RpcError::invalid_params(
                    name,
                    format!("must be a non-negative integer, got {v}"),
                )),
            },
        }
    }

    /// The `limit` of a list: [`DEFAULT_LIST_LIMIT`] when absent, −32602 naming `limit` above
    /// [`MAX_LIST_LIMIT`].
    pub fn list_limit(&self) -> Result<usize, RpcError> {
        Ok(self
            .opt_u64(&["limit"], MAX_LIST_LIMIT as u64)?
            .map_or(DEFAULT_LIST_LIMIT, |n| n as usize))
    }

    /// A required array of strings.
    pub fn strings(&self, names: &[&'static str]) -> Result<Vec<String>, RpcError> {
        self.opt_strings(names)?.ok_or_else(|| Self::missing(names))
    }

    /// An optional array of strings.
    pub fn opt_strings(&self, names: &[&'static str]) -> Result<Option<Vec<String>>, RpcError> {
        match self.find(names) {
            None => Ok(None),
            Some((name, Value::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(RpcError::invalid_params(
                        format!("{name}[{i}]"),
                        format!("must be a string, got {}", type_name(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some((name, v)) => Err(RpcError::invalid_params(
                name,
                format!("must be an array of strings, got {}", type_name(v)),
            )),
        }
    }

    /// An optional value of any JSON type.
    pub fn opt_value(&self, names: &[&'static str]) -> Option<&Value> {
        self.find(names).map(|(_, v)| v)
    }

    /// A required task id: `"t-17"` or `17`.
    pub fn task_id(&self, names: &[&'static str]) -> Result<TaskId, RpcError> {
        match self.find(names) {
            None => Err(Self::missing(names)),
            Some((_, Value::Number(n))) if n.as_u64().is_some() => {
                Ok(TaskId(n.as_u64().unwrap_or_default()))
            }
            Some((name, Value::String(s))) => s
                .parse()
                .map_err(|e: String| RpcError::invalid_params(name, e)),
            Some((name, v)) => Err(RpcError::invalid_params(
                name,
                format!("must be `t-<number>` or a number, got {v}"),
            )),
        }
    }
}
