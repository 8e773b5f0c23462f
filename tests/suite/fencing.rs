//! Fencing (issue 19): every write script refuses a write whose coordinator epoch is not the
//! lease's, and the coordinator lease itself (acquire, renew, release, expiry, takeover),
//! against a real `redis-server` each test starts for itself.

use std::time::Duration;

use crate::redis_server::RedisServer;
use vigil::model::{Epoch, InstanceId, InstanceStatus, Term};
use vigil::store::{
    Acquire, CoordLease, Counters, HeartbeatWrite, InstanceRecord, RedisConfig, RedisStore,
    Renewal, Store, TermRecord, WriteBatch,
};
use vigil::work::lease::LeaseKey;
use vigil::work::records::{LeaseRecord, TaskRecord};
use vigil::work::task::{TaskId, TaskStatus};
use vigil::{Event, EventKind, Limits};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s, &Limits::default()).unwrap()
}

fn instance(name: &str, now: u64) -> InstanceRecord {
    InstanceRecord {
        id: id(name),
        roles: vec!["worker".into()],
        status: InstanceStatus::Active,
        last_seen_ms: now,
        epoch: Epoch(1),
        ttl_ms: 30_000,
        metadata: serde_json::json!({}),
        registered_at_ms: now,
        owner: None,
    }
}

fn task(n: u64, now: u64) -> TaskRecord {
    TaskRecord {
        id: TaskId(n),
        seq: n,
        status: TaskStatus::Pending,
        priority: 50,
        payload: serde_json::json!({"text": "t"}),
        attempts: 0,
        max_attempts: 3,
        locks: Vec::new(),
        role: None,
        assignee: None,
        claim_token: None,
        created_at_ms: now,
        updated_at_ms: None,
        reserved_for: None,
        finished_by: None,
        claimed_at_ms: None,
        heartbeat_at_ms: None,
        finished_at_ms: None,
        result: None,
        error: None,
        request_id: None,
        request_owner: None,
    }
}

/// A batch that calls every write script once: counters, instance put and gone, heartbeats
/// (with the flush mark), task put and gone, lease put and gone, term, events and ClaudeBench's
/// events. The flush mark's own script runs when no heartbeat goes with it: [`mark_only`].
fn every_write(now: u64) -> WriteBatch {
    WriteBatch {
        instances: vec![(instance("w-1", now), 30_000)],
        instances_gone: vec![id("w-gone")],
        heartbeats: vec![HeartbeatWrite {
            id: id("w-1"),
            last_seen_ms: now,
            status: InstanceStatus::Active,
            expire_in_ms: 30_000,
        }],
        tasks: vec![task(1, now)],
        tasks_gone: vec![TaskId(99)],
        leases: vec![(
            LeaseRecord {
                key: LeaseKey::parse("db/a").unwrap(),
                grants: Vec::new(),
            },
            30_000,
        )],
        leases_gone: vec![LeaseKey::parse("db/gone").unwrap()],
        term: Some(TermRecord {
            term: Term(3),
            leader: Some(id("w-1")),
            epoch: Some(Epoch(1)),
        }),
        counters: Some(Counters {
            last_epoch: 5,
            ..Counters::default()
        }),
        events: vec![Event::new(EventKind::InstanceRegistered, Term(3), now)],
        flush_mark: Some(now),
    }
}

/// The batch's commands: 10 script calls plus one ClaudeBench event call.
const WRITES: usize = 11;

/// A flush tick that moved no heartbeat: the flush mark alone.
fn mark_only(at: u64) -> WriteBatch {
    WriteBatch {
        flush_mark: Some(at),
        ..WriteBatch::default()
    }
}

async fn keys(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn set_epoch(redis: &RedisServer, epoch: u64) {
    let _: () = redis::cmd("HSET")
        .arg("cb:coordinator")
        .arg("epoch")
        .arg(epoch)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
}

async fn store(redis: &RedisServer, fence: Option<u64>) -> RedisStore {
    let mut rc = RedisConfig::new(redis.url());
    rc.fence_epoch = fence;
    RedisStore::connect(&rc).await.unwrap()
}

#[tokio::test]
async fn every_write_script_is_refused_with_an_old_epoch_and_accepted_with_the_current_one() {
    let redis = RedisServer::start();
    set_epoch(&redis, 2).await;
    let now = now_ms();

    // An old epoch: every script in the pipeline answers FENCED, nothing is written, nothing
    // published.
    let old = store(&redis, Some(1)).await;
    let e = old.apply(&every_write(now)).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(
        e.0.contains("store epoch is 2, ours 1")
            && e.0
                .contains(&format!("{WRITES} of {WRITES} writes refused")),
        "{e}"
    );
    assert!(old.apply(&mark_only(now)).await.unwrap_err().is_fenced());
    let e = old.reserve_terms(100).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    let beat = HeartbeatWrite {
        id: id("w-1"),
        last_seen_ms: now,
        status: InstanceStatus::Active,
        expire_in_ms: 30_000,
    };
    assert!(old.heartbeat(&beat).await.unwrap_err().is_fenced());
    assert_eq!(keys(&redis).await, vec!["cb:coordinator".to_string()]);
    assert_eq!(redis.calls("publish").await, 0);
    assert_eq!(redis.calls("xadd").await, 0);

    // A newer epoch than the lease's is refused as well (only equality passes).
    let newer = store(&redis, Some(3)).await;
    assert!(
        newer
            .apply(&every_write(now))
            .await
            .unwrap_err()
            .is_fenced()
    );
    assert_eq!(keys(&redis).await, vec!["cb:coordinator".to_string()]);

    // The current epoch: everything is written.
    let current = store(&redis, Some(2)).await;
    current.apply(&every_write(now)).await.unwrap();
    assert_eq!(current.reserve_terms(100).await.unwrap(), 100);
    current.heartbeat(&beat).await.unwrap();
    let written = keys(&redis).await;
    for key in [
        "cb:coordinator",
        "cb:instance:w-1",
        "cb:instances:active",
        "cb:task:t-1",
        "cb:queue:tasks:pending",
        "cb:lease:db/a",
        "cb:leader:term",
        "cb:meta:counters",
        "cb:stream:events",
        "cb:stream:instance.registered",
    ] {
        assert!(written.contains(&key.to_string()), "{key} in {written:?}");
    }
    let counters: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("cb:meta:counters")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(counters["lastFlush"], now.to_string());
    current.apply(&mark_only(now + 1)).await.unwrap();
    let last_flush: String = redis::cmd("HGET")
        .arg("cb:meta:counters")
        .arg("lastFlush")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(last_flush, (now + 1).to_string());
    assert_eq!(counters["lastEpoch"], "5");
    assert_eq!(counters["termReserved"], "100");
    assert_eq!(redis.calls("publish").await, 1);

    // Once the lease moves on, the store that wrote is refused too.
    set_epoch(&redis, 3).await;
    assert!(
        current
            .apply(&every_write(now))
            .await
            .unwrap_err()
            .is_fenced()
    );
}

#[tokio::test]
async fn without_a_fence_epoch_no_check_is_made() {
    let redis = RedisServer::start();
    // A lease held by someone else does not stop a store that was not asked to fence.
    set_epoch(&redis, 7).await;
    let plain = store(&redis, None).await;
    plain.apply(&every_write(now_ms())).await.unwrap();
    assert!(keys(&redis).await.contains(&"cb:task:t-1".to_string()));
}

async fn lease(redis: &RedisServer) -> CoordLease {
    CoordLease::connect(&RedisConfig::new(redis.url()))
        .await
        .unwrap()
}

async fn coordinator_hash(redis: &RedisServer) -> std::collections::HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg("cb:coordinator")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_lease_is_acquired_held_renewed_and_released() {
    let redis = RedisServer::start();
    let l = lease(&redis).await;
    let ten = Duration::from_secs(10);
    let Acquire::Acquired { epoch } = l.try_acquire("a", "http://a", ten).await.unwrap() else {
        panic!("a free lease is taken");
    };
    assert_eq!(epoch, 1);
    match l.try_acquire("b", "http://b", ten).await.unwrap() {
        Acquire::Held {
            epoch: held,
            holder,
            url,
            remaining,
        } => {
            assert_eq!((held, holder.as_str(), url.as_str()), (1, "a", "http://a"));
            assert!(
                remaining > Duration::from_secs(9) && remaining <= ten,
                "{remaining:?}"
            );
        }
        other => panic!("b took a held lease: {other:?}"),
    }
    assert_eq!(l.renew(1, "a", ten).await.unwrap(), Renewal::Renewed);
    assert_eq!(
        l.renew(1, "b", ten).await.unwrap(),
        Renewal::Fenced { epoch: 1 }
    );
    assert_eq!(
        l.renew(0, "a", ten).await.unwrap(),
        Renewal::Fenced { epoch: 1 }
    );
    assert!(!l.release(1, "b").await.unwrap(), "b does not hold it");
    assert!(l.release(1, "a").await.unwrap());
    assert_eq!(coordinator_hash(&redis).await["epoch"], "1");
    // Released: a renewal fails, and the next acquire is at once and raises the epoch.
    assert_eq!(
        l.renew(1, "a", ten).await.unwrap(),
        Renewal::Fenced { epoch: 1 }
    );
    assert_eq!(
        l.try_acquire("b", "http://b", ten).await.unwrap(),
        Acquire::Acquired { epoch: 2 }
    );
    // Bad input.
    assert!(l.try_acquire("", "u", ten).await.is_err());
    assert!(l.try_acquire("c", "u", Duration::ZERO).await.is_err());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_under_a_higher_epoch_and_fences_the_old_holder() {
    let redis = RedisServer::start();
    let l = lease(&redis).await;
    let short = Duration::from_millis(200);
    assert_eq!(
        l.try_acquire("a", "http://a", short).await.unwrap(),
        Acquire::Acquired { epoch: 1 }
    );
    // Polled with a deadline: Redis's clock decides when it expires.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let epoch = loop {
        match l
            .try_acquire("b", "http://b", Duration::from_secs(10))
            .await
            .unwrap()
        {
            Acquire::Acquired { epoch } => break epoch,
            Acquire::Held { remaining, .. } => {
                assert!(std::time::Instant::now() < deadline, "never expired");
                assert!(remaining <= short);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(epoch, 2);
    assert_eq!(
        l.renew(1, "a", short).await.unwrap(),
        Renewal::Fenced { epoch: 2 }
    );
    assert!(!l.release(1, "a").await.unwrap());
    // The old holder's store is fenced, the new one's is not.
    let now = now_ms();
    let old = store(&redis, Some(1)).await;
    assert!(old.apply(&every_write(now)).await.unwrap_err().is_fenced());
    store(&redis, Some(2))
        .await
        .apply(&every_write(now))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_epoch_is_above_every_counters_epoch_part_and_capped() {
    let redis = RedisServer::start();
    let l = lease(&redis).await;
    let ten = Duration::from_secs(10);
    // Values with epoch 5 in their high bits (E·2^32 + n) were handed out before.
    let _: () = redis::cmd("HSET")
        .arg("cb:meta:counters")
        .arg("lastFencingToken")
        .arg((5u64 << 32) + 17)
        .arg("termReserved")
        .arg(3)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(
        l.try_acquire("a", "u", ten).await.unwrap(),
        Acquire::Acquired { epoch: 6 }
    );
    // Epochs stay below 2^21 (values below 2^53).
    let _: () = redis::cmd("HSET")
        .arg("cb:coordinator")
        .arg("epoch")
        .arg((1u64 << 21) - 1)
        .arg("holder")
        .arg("")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let e = l.try_acquire("b", "u", ten).await.unwrap_err();
    assert!(e.0.contains("EPOCH_EXHAUSTED"), "{e}");
}
