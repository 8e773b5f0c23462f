//! Comparing the store with memory: after a flush, every instance, task, lease and the term the
//! store holds must be what memory holds. Used by chaos runs (`chaos.verify_store`) and tests.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Coordinator;
use crate::error::Error;

/// What [`Coordinator::verify_store`] found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreCheck {
    /// The store's kind (`memory`: nothing to compare).
    pub store: &'static str,
    /// Instances compared (memory's count).
    pub instances: usize,
    /// Tasks compared.
    pub tasks: usize,
    /// Leases compared.
    pub leases: usize,
    /// Each difference found (at most 50), e.g. `task t-7: memory claimed by w1/3, store pending`.
    pub differences: Vec<String>,
}

const MAX_DIFFERENCES: usize = 50;

fn diff<K: Ord + std::fmt::Display, V: PartialEq + std::fmt::Debug>(
    kind: &str,
    memory: &BTreeMap<K, V>,
    stored: &BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    for (k, m) in memory {
        match stored.get(k) {
            None => out.push(format!(
                "{kind} {k}: in memory ({m:?}), missing from the store"
            )),
            Some(s) if s != m => out.push(format!("{kind} {k}: memory {m:?}, store {s:?}")),
            _ => {}
        }
    }
    for (k, s) in stored {
        if !memory.contains_key(k) {
            out.push(format!("{kind} {k}: in the store ({s:?}), not in memory"));
        }
    }
}

impl Coordinator {
    /// Flushes, reads the whole store back and compares it with memory: instances (id →
    /// epoch, status), tasks (id → status, holder, claim token, attempts), leases (key →
    /// holders and fencing tokens) and the term. Meaningful when nothing changes meanwhile
    /// (after a load has stopped); with the in-memory store there is nothing to compare.
    pub async fn verify_store(&self) -> Result<StoreCheck, Error> {
        let Some(p) = &self.inner.ctx.persistence else {
            return Ok(StoreCheck {
                store: "memory",
                ..StoreCheck::default()
            });
        };
        self.flush().await?;
        let snap = p
            .store
            .load(0)
            .await
            .map_err(|e| Error::StoreUnavailable(e.to_string()))?;
        let ctx = &self.inner.ctx;
        let clock = &ctx.clock;
        let settled_ms = clock.now_wall_ms() + LAPSING_MS;
        let mut memory_instances = BTreeMap::new();
        for entry in ctx.registry.iter() {
            let (status, _) = entry.cell.liveness();
            if status.is_alive() {
                memory_instances.insert(entry.key().to_string(), (entry.slot.epoch.0, status));
            }
        }
        let (memory_tasks, memory_leases) = {
            let work = ctx.work.lock();
            let (task_ids, lease_keys) = work.all_keys();
            let tasks: BTreeMap<String, _> = task_ids
                .iter()
                .filter_map(|id| work.task_record(*id, clock))
                .map(|t| {
                    let holder = t.assignee.map(|(i, e)| (i.to_string(), e.0));
                    (
                        t.id.to_string(),
                        (t.status, holder, t.claim_token.clone(), t.attempts),
                    )
                })
                .collect();
            let leases: BTreeMap<String, _> = lease_keys
                .iter()
                .filter_map(|k| work.lease_record(k, clock))
                .map(|l| (l.key.to_string(), grants(&l, settled_ms)))
                .filter(|(_, g)| !g.is_empty())
                .collect();
            (tasks, leases)
        };
        let stored_instances: BTreeMap<String, _> = snap
            .instances
            .iter()
            .map(|r| (r.id.to_string(), (r.epoch.0, r.status)))
            .collect();
        let stored_tasks: BTreeMap<String, _> = snap
            .tasks
            .iter()
            .map(|t| {
                let holder = t.assignee.as_ref().map(|(i, e)| (i.to_string(), e.0));
                (
                    t.id.to_string(),
                    (t.status, holder, t.claim_token.clone(), t.attempts),
                )
            })
            .collect();
        let stored_leases: BTreeMap<String, _> = snap
            .leases
            .iter()
            .map(|l| (l.key.to_string(), grants(l, settled_ms)))
            .filter(|(_, g)| !g.is_empty())
            .collect();
        let mut differences = Vec::new();
        diff(
            "instance",
            &memory_instances,
            &stored_instances,
            &mut differences,
        );
        diff("task", &memory_tasks, &stored_tasks, &mut differences);
        diff("lease", &memory_leases, &stored_leases, &mut differences);
        let view = ctx.leadership.view(|ms| clock.wall_ms(ms));
        match &snap.term {
            Some(t) if t.term != view.term || t.leader != view.leader => differences.push(format!(
                "term: memory {} led by {:?}, store {} led by {:?}",
                view.term.0, view.leader, t.term.0, t.leader
            )),
            None if view.term.0 > 0 => {
                differences.push(format!("term: memory {}, none in the store", view.term.0))
            }
            _ => {}
        }
        for (key, reason) in &snap.skipped {
            differences.push(format!("unreadable key {key}: {reason}"));
        }
        differences.truncate(MAX_DIFFERENCES);
        Ok(StoreCheck {
            store: p.store.kind(),
            instances: memory_instances.len(),
            tasks: memory_tasks.len(),
            leases: memory_leases.len(),
            differences,
        })
    }
}

/// The grants of `l` that do not lapse before `settled_ms` (wall clock): a grant about to
/// lapse may already be gone from Redis (its key expires at the grant's expiry) while memory
/// still holds it until the next sweep, and neither copy is wrong.
fn grants(l: &crate::work::records::LeaseRecord, settled_ms: u64) -> Vec<(String, u64)> {
    let mut g: Vec<(String, u64)> = l
        .grants
        .iter()
        .filter(|g| g.expires_at_ms > settled_ms)
        .map(|g| (format!("{:?}", g.holder), g.fencing_token))
        .collect();
    g.sort();
    g
}

/// How far ahead of now a grant must run to be compared: a sweep interval and a margin.
const LAPSING_MS: u64 = 3_000;
