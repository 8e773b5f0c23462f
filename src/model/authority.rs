//! On whose authority a call acts on an instance, and the binding of an instance to the
//! principal that registered it.

use std::sync::Arc;

/// On whose authority a call acts on an instance (and on the tasks and leases it holds).
///
/// A server without named tokens, and an operator token, act with [`Authority::Any`]. A
/// `worker` token acts with [`Authority::Principal`]: it may act only on the instances it
/// registered itself, which are bound to its name for their epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Authority {
    /// May act on every instance (an operator, or a server with no identities configured).
    #[default]
    Any,
    /// A worker principal: may act only on instances bound to this name.
    Principal(Arc<str>),
}

impl Authority {
    /// Whether this authority may act on an instance bound to `owner` (`None`: registered by
    /// an operator or on an open server, so only [`Authority::Any`] may act on it).
    #[inline]
    pub fn permits(&self, owner: Option<&str>) -> bool {
        match self {
            Authority::Any => true,
            Authority::Principal(name) => owner == Some(&**name),
        }
    }

    /// The owner a new registration on this authority is bound to.
    pub fn binds(&self) -> Option<Arc<str>> {
        match self {
            Authority::Any => None,
            Authority::Principal(name) => Some(Arc::clone(name)),
        }
    }

    /// Why `self` may not act on an instance bound to `owner`, as told to the caller: never
    /// the owner's name, which is not the caller's business.
    pub fn refusal(&self, owner: Option<&str>) -> &'static str {
        match owner {
            None => "the instance was registered by an operator; only an operator may act on it",
            Some(_) => "the instance is bound to another principal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_acts_only_on_its_own_instances() {
        let alice = Authority::Principal(Arc::from("alice"));
        assert!(alice.permits(Some("alice")));
        assert!(!alice.permits(Some("bob")));
        assert!(!alice.permits(None));
        assert!(Authority::Any.permits(Some("bob")));
        assert!(Authority::Any.permits(None));
        assert_eq!(alice.binds().as_deref(), Some("alice"));
        assert_eq!(Authority::Any.binds(), None);
    }
}
