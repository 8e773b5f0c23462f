//! The domain vocabulary: ids, requests, answers, and the validation of what callers send.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

mod authority;
pub mod page;
pub mod work;

pub use authority::Authority;
pub use page::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, Page};
pub use work::{ClaimToken, LeaseKey, TaskBrief, TaskId, TaskStatus};

use crate::config::Limits;
use crate::error::ValidationError;

/// The id a worker chose for itself (`worker-claude-001`). Cheap to clone: ids of up to 23
/// bytes are stored inline (no heap, no pointer to chase — which is what keeps the registry
/// lookup of the heartbeat hot path to one cache miss for the key), longer ones are shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(SmolStr);

impl InstanceId {
    /// Validates `id` (1–256 characters by default, no whitespace, no control characters).
    pub fn parse(id: &str, limits: &Limits) -> Result<Self, ValidationError> {
        validate_id(id, limits)?;
        Ok(Self(SmolStr::new(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Any text taken as an id without validation, to compare with ids (a paging cursor);
    /// never registered.
    pub(crate) fn cursor(text: &str) -> Self {
        Self(SmolStr::new(text))
    }
}

impl std::borrow::Borrow<str> for InstanceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incarnation number of an instance id. Every registration that is not a refresh of a live
/// instance gets a new epoch, greater than any epoch handed out before by this coordinator, so
/// epochs of one id strictly increase (they are not consecutive). The oldest live epoch is the
/// leader candidate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// Leadership term: it grows by one at every change of leader (including to "no leader"), and at
/// most one instance leads in a term, so it serves as the fencing token for leader-only work.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an instance stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Heartbeating within its TTL minus the grace.
    Active,
    /// Silent for longer than TTL − grace; still alive, still counted, no longer preferred as
    /// a leader.
    Suspect,
    /// Silent for its whole TTL: gone. A heartbeat does not bring it back; it must register.
    Expired,
    /// Left on its own request.
    Unregistered,
}

impl InstanceStatus {
    /// True for [`Active`](Self::Active) and [`Suspect`](Self::Suspect).
    pub fn is_alive(self) -> bool {
        matches!(self, Self::Active | Self::Suspect)
    }

    /// The lowercase name used on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspect => "suspect",
            Self::Expired => "expired",
            Self::Unregistered => "unregistered",
        }
    }
}

/// Checks a role — of an instance, or one a task requires: 1 to
/// [`Limits::max_role_chars`] characters, no control characters. `field` names it in the error.
pub(crate) fn check_role(role: &str, limits: &Limits, field: &str) -> Result<(), ValidationError> {
    let chars = role.chars().count();
    if chars == 0 || chars > limits.max_role_chars {
        return Err(ValidationError::new(
            field.to_string(),
            format!(
                "a role must have 1 to {} characters, got {chars}",
                limits.max_role_chars
            ),
        ));
    }
    if role.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field.to_string(),
            "a role must not contain control characters",
        ));
    }
    Ok(())
}

/// What a worker sends to join the cluster. Built with [`RegisterRequest::new`] and the
/// builder methods; validated by the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The instance id.
    pub id: String,
    /// Roles the instance plays (`worker`, `relay` …).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Free-form JSON object describing the instance.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// TTL for this instance; the coordinator's default when absent.
    #[serde(default)]
    pub ttl: Option<Duration>,
}

impl RegisterRequest {
    /// A request for `id` with no roles, no metadata and the default TTL.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            roles: Vec::new(),
            metadata: None,
            ttl: None,
        }
    }

    /// Sets the roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the metadata object.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Checks every rule of [`Limits`] and returns the request in its validated form. The first
    /// broken rule is reported; nothing is registered.
    pub(crate) fn validate(
        self,
        limits: &Limits,
        default_ttl: Duration,
    ) -> Result<ValidRegistration, ValidationError> {
        let id = InstanceId::parse(&self.id, limits)?;
        if self.roles.len() > limits.max_roles {
            return Err(ValidationError::new(
                "roles",
                format!(
                    "at most {} roles are allowed, got {}",
                    limits.max_roles,
                    self.roles.len()
                ),
            ));
        }
        for (i, role) in self.roles.iter().enumerate() {
            check_role(role, limits, &format!("roles[{i}]"))?;
        }
        let metadata = match self.metadata {
            None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
            Some(value @ serde_json::Value::Object(_)) => {
                let size = serde_json::to_vec(&value)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > limits.max_metadata_bytes {
                    return Err(ValidationError::new(
                        "metadata",
                        format!(
                            "at most {} bytes when serialized, got {size}",
                            limits.max_metadata_bytes
                        ),
                    ));
                }
                value
            }
            Some(_) => {
                return Err(ValidationError::new("metadata", "must be a JSON object"));
            }
        };
        let ttl = self.ttl.unwrap_or(default_ttl);
        if ttl < limits.min_ttl || ttl > limits.max_ttl {
            return Err(ValidationError::new(
                "ttl",
                format!(
                    "must lie within {} ms..={} ms, got {} ms",
                    limits.min_ttl.as_millis(),
                    limits.max_ttl.as_millis(),
                    ttl.as_millis()
                ),
            ));
        }
        Ok(ValidRegistration {
            id,
            roles: self.roles,
            metadata,
            ttl,
            authority: Authority::Any,
        })
    }
}

/// A [`RegisterRequest`] that passed validation. Only the coordinator builds one, so an actor
/// that receives it never re-checks the rules.
#[derive(Debug, Clone)]
pub struct ValidRegistration {
    pub(crate) id: InstanceId,
    pub(crate) roles: Vec<String>,
    pub(crate) metadata: serde_json::Value,
    pub(crate) ttl: Duration,
    /// On whose authority: a live instance bound to another principal is refused, a new one
    /// is bound to this one.
    pub(crate) authority: Authority,
}

fn validate_id(id: &str, limits: &Limits) -> Result<(), ValidationError> {
    let chars = id.chars().count();
    if chars == 0 || chars > limits.max_id_chars {
        return Err(ValidationError::new(
            "id",
            format!(
                "an instance id must have 1 to {} characters, got {chars}",
                limits.max_id_chars
            ),
        ));
    }
    if let Some(bad) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            "id",
            format!(
                "an instance id must not contain whitespace or control characters (found U+{:04X})",
                bad as u32
            ),
        ));
    }
    Ok(())
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// Always true: a refused registration is an error.
    pub registered: bool,
    /// The instance id.
    pub id: InstanceId,
    /// The epoch: unchanged when a live instance registered again, new otherwise.
    pub epoch: Epoch,
    /// True when this registration refreshed a live instance instead of creating one.
    pub refreshed: bool,
    /// Whether this instance leads.
    pub is_leader: bool,
    /// The current leader, if any.
    pub leader: Option<InstanceId>,
    /// The current term.
    pub term: Term,
}

/// The answer to an unregistration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unregistration {
    /// Whether the instance was registered and alive (false for an unknown id: not an error).
    pub unregistered: bool,
    /// How many of its tasks went back to pending (or failed for good, out of attempts).
    pub tasks_reassigned: usize,
}

/// The answer to a heartbeat. Never an error: an unknown, expired or unregistered instance is
/// `alive: false` and must register again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Whether the instance is registered and alive (and now refreshed).
    pub alive: bool,
    /// Whether it leads in `term`.
    pub is_leader: bool,
    /// The current term.
    pub term: Term,
}

/// One instance as [`Coordinator::state`](crate::Coordinator::state) shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// The id.
    pub id: InstanceId,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its status.
    pub status: InstanceStatus,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its metadata object.
    pub metadata: serde_json::Value,
    /// TTL in milliseconds.
    pub ttl_ms: u64,
    /// Wall-clock milliseconds (Unix epoch) of its last heartbeat, to clock resolution.
    pub last_seen_ms: u64,
    /// Wall-clock milliseconds of its registration in this epoch.
    pub registered_at_ms: u64,
    /// Whether it leads.
    pub is_leader: bool,
    /// The principal it is bound to (absent: registered by an operator or on a server
    /// without identities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The leader and its term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    /// The leader, or `None` while nobody is alive.
    pub leader: Option<InstanceId>,
    /// The leader's epoch.
    pub epoch: Option<Epoch>,
    /// The current term.
    pub term: Term,
    /// Wall-clock milliseconds of the last change of leader.
    pub since_ms: u64,
}

/// Which part of the state to show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateQuery {
    /// Only this instance.
    pub instance_id: Option<String>,
    /// At most this many instances (ordered by id) and recent events; all when `None`.
    pub limit: Option<usize>,
    /// Only instances whose id sorts after this one (the last id of the previous page).
    pub after: Option<String>,
}

/// The answer to [`Coordinator::check_health`](crate::Coordinator::check_health).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Instances heard from within the timeout, ordered by id.
    pub healthy: Vec<InstanceId>,
    /// Registered instances silent for longer than the timeout, ordered by id. They are
    /// reported, not expired: expiry stays with each instance's own TTL.
    pub failed: Vec<InstanceId>,
}
