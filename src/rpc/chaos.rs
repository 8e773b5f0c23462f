//! `chaos.*`: fault injection for chaos runs, served only by a server started with `--chaos`
//! (and refused with −32601 otherwise).
//!
//! * `chaos.kill {actor: "instance"|"leader"|"persister", ids?: [id], how?: "kill"|"panic"}` →
//!   `{actor, killed}`: stops the named actors abruptly (`kill`, the default) or makes them
//!   panic; the supervisor restarts them. `ids` names the instances whose InstanceActors die.
//! * `chaos.status {}` → what the supervisor holds and how many restarts it made.
//! * `chaos.verify_store {}` → flushes, reads the store back and lists every difference from
//!   memory (see [`Coordinator::verify_store`]).

use serde_json::{Value, json};

use super::{Params, RpcError, code, to_json};
use crate::coordinator::Coordinator;
use crate::coordinator::faults::Strike;

/// `chaos.kill`.
pub async fn kill(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let actor = p.str(&["actor"])?;
    let how = match p.opt_str(&["how"])? {
        None | Some("kill") => Strike::Kill,
        Some("panic") => Strike::Panic,
        Some(other) => {
            return Err(RpcError::invalid_params(
                "how",
                format!("{other:?} is not kill or panic"),
            ));
        }
    };
    let killed = match actor {
        "instance" => {
            let ids = p
                .opt_strings(&["ids"])?
                .ok_or_else(|| RpcError::invalid_params("ids", "instance kills name their ids"))?;
            ids.iter()
                .filter(|id| c.faults().strike_instance(id, how))
                .count()
        }
        "leader" => c.faults().strike_leader(how).await.into(),
        "persister" => c.faults().strike_persister(how).await.into(),
        other => {
            return Err(RpcError::invalid_params(
                "actor",
                format!("{other:?} is not instance, leader or persister"),
            ));
        }
    };
    Ok(json!({"actor": actor, "killed": killed}))
}

/// `chaos.status`.
pub async fn status(c: &Coordinator, _p: Params) -> Result<Value, RpcError> {
    let view = c
        .faults()
        .inspect_supervisor()
        .await
        .map_err(|e| RpcError::new(code::INTERNAL, e.to_string()))?;
    Ok(json!({
        "instances": view.instances,
        "instanceActors": view.instance_actors,
        "instanceRestarts": view.instance_restarts,
        "leaderRestarts": view.leader_restarts,
        "persisterRestarts": view.persister_restarts,
    }))
}

/// `chaos.verify_store`.
pub async fn verify_store(c: &Coordinator, _p: Params) -> Result<Value, RpcError> {
    let check = c.verify_store().await.map_err(|e| match e {
        crate::Error::StoreUnavailable(m) | crate::Error::NotDurable(m) => {
            RpcError::new(code::STORE_UNAVAILABLE, m)
        }
        other => RpcError::new(code::INTERNAL, other.to_string()),
    })?;
    to_json(&check)
}
