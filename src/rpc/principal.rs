//! Who is calling: the principal a transport established from the caller's bearer token.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::model::Authority;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May act on every instance, task and lease, and call `chaos.*` (where served).
    Operator,
    /// May act only on the instances it registered, and on the tasks and leases they hold.
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Operator => "operator",
            Role::Worker => "worker",
        })
    }
}

/// The caller of a [`Dispatcher`](super::Dispatcher): a named principal with a role, or the
/// anonymous caller of a server that has no tokens (which may act on everything, as an
/// operator may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: Arc<str>,
    role: Role,
}

impl Default for Principal {
    fn default() -> Self {
        Self::anonymous()
    }
}

impl Principal {
    /// The caller of a server without tokens: acts as an operator, under the name `anonymous`.
    pub fn anonymous() -> Self {
        Self::operator("anonymous")
    }

    /// An operator named `name`.
    pub fn operator(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            role: Role::Operator,
        }
    }

    /// A worker named `name`.
    pub fn worker(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            role: Role::Worker,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// On whose authority its calls act on instances.
    pub(crate) fn authority(&self) -> Authority {
        match self.role {
            Role::Operator => Authority::Any,
            Role::Worker => Authority::Principal(Arc::clone(&self.name)),
        }
    }
}
