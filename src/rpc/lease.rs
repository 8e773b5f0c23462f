//! `lease.*`: resource leases. The holder is an instance (`holder`) or a task claim
//! (`taskId` + `claimToken`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Params, RpcError, to_json};
use crate::coordinator::{Coordinator, LeaseOutcome, LeaseOwner};
use crate::model::Authority;
use crate::work::lease::LeaseMode;

fn owner(p: &Params) -> Result<LeaseOwner, RpcError> {
    if p.find(&["taskId", "stepId", "step_id"]).is_some() {
        return Ok(LeaseOwner::Claim {
            task_id: p.task_id(&["taskId", "stepId", "step_id"])?,
            claim_token: p.str(&["claimToken", "claim_token"])?.to_string(),
        });
    }
    Ok(LeaseOwner::Instance(
        p.str(&["holder", "instanceId"])?.to_string(),
    ))
}

fn mode(p: &Params) -> Result<LeaseMode, RpcError> {
    match p.opt_str(&["mode"])? {
        None | Some("exclusive") => Ok(LeaseMode::Exclusive),
        Some("shared") => Ok(LeaseMode::Shared),
        Some(other) => Err(RpcError::invalid_params(
            "mode",
            format!("must be exclusive or shared, got {other:?}"),
        )),
    }
}

fn ttl(p: &Params) -> Result<Option<Duration>, RpcError> {
    Ok(p.opt_u64(&["ttlSec", "ttl_sec"], u64::from(u32::MAX))?
        .map(Duration::from_secs))
}

/// `lease.acquire {key, holder | taskId+claimToken, mode?, ttlSec?}` →
/// `{acquired, fencingToken, expiresAt}` or `{acquired: false, conflicts}`.
pub async fn acquire(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let key = p.str(&["key"])?;
    match c
        .acquire_lease_as(key, owner(&p)?, mode(&p)?, ttl(&p)?, a)
        .await?
    {
        LeaseOutcome::Granted(g) => Ok(json!({
            "acquired": true,
            "fencingToken": g.fencing_token,
            "expiresAt": g.expires_at_ms,
            "lease": to_json(&g)?,
        })),
        LeaseOutcome::Conflict(conflicts) => Ok(json!({
            "acquired": false,
            "conflicts": to_json(&conflicts)?,
        })),
    }
}

/// `lease.renew {key, holder | taskId+claimToken, ttlSec?}` →
/// `{renewed, fencingToken?, expiresAt?}`.
pub async fn renew(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let key = p.str(&["key"])?;
    match c.renew_lease_as(key, owner(&p)?, ttl(&p)?, a).await? {
        Some(g) => Ok(json!({
            "renewed": true,
            "fencingToken": g.fencing_token,
            "expiresAt": g.expires_at_ms,
        })),
        None => Ok(json!({"renewed": false})),
    }
}

/// `lease.release {key, holder | taskId+claimToken}` → `{released}`.
pub async fn release(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let key = p.str(&["key"])?;
    Ok(json!({"released": c.release_lease_as(key, owner(&p)?, a).await?}))
}

/// `lease.list {prefix?}` → `{leases}`.
pub async fn list(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let prefix = p.opt_str(&["prefix"])?;
    Ok(json!({"leases": to_json(&c.list_leases(prefix)?)?}))
}
