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

/// `lease.list {prefix?, limit?, after?}` → `{leases, total, truncated, nextAfter?}`: at most
/// `limit` leases (default 100, at most 1000) ordered by key and then fencing token, those
/// after the cursor `after` only — the `nextAfter` of the previous page, `<key>#<fencingToken>`.
pub async fn list(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let prefix = p.opt_str(&["prefix"])?;
    let limit = p.list_limit()?;
    let after = p.opt_str(&["after"])?.map(parse_cursor).transpose()?;
    let page = c.list_leases_page(prefix, after, limit)?;
    let mut value = json!({
        "leases": to_json(&page.items)?,
        "total": page.total,
        "truncated": page.truncated,
    });
    if page.truncated
        && let Some(last) = page.items.last()
    {
        value["nextAfter"] = json!(cursor(last.key.as_str(), last.fencing_token));
    }
    Ok(value)
}

/// The paging cursor of a lease: its key and fencing token.
fn cursor(key: &str, fencing_token: u64) -> String {
    format!("{key}#{fencing_token}")
}

/// `<key>#<fencingToken>` → its parts. A key may hold `#` itself: the token follows the last.
fn parse_cursor(text: &str) -> Result<(&str, u64), RpcError> {
    text.rsplit_once('#')
        .and_then(|(key, token)| {
            let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
            Some((key, token.parse().ok().filter(|_| digits)?))
        })
        .ok_or_else(|| {
            RpcError::invalid_params(
                "after",
                format!(
                    "must be the nextAfter of a previous lease.list page, \
                     `<key>#<fencingToken>`, got {text:?}"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_cursors_round_trip_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_cursor(&cursor("repo/src", 17)).unwrap(),
            ("repo/src", 17)
        );
        assert_eq!(parse_cursor(&cursor("a#b", 3)).unwrap(), ("a#b", 3));
        for bad in ["repo/src", "repo#", "repo#x1", "repo#-1", "#"] {
            let e = parse_cursor(bad).unwrap_err();
            assert_eq!(e.data.unwrap()["field"], "after", "{bad}");
        }
    }
}
