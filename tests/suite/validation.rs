//! Every input rule: a violation is a typed error naming the field and the rule, and nothing
//! changes.

use std::time::Duration;

use crate::common::Harness;
use vigil::{Config, Error, Limits, RegisterRequest};

async fn refused(h: &Harness, request: RegisterRequest) -> vigil::ValidationError {
    match h.coordinator.register(request).await {
        Err(Error::Invalid(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn every_validation_rule_is_reported_with_its_field() {
    let h = Harness::default().await;
    let cases: Vec<(RegisterRequest, &str, &str)> = vec![
        (RegisterRequest::new(""), "id", "1 to 256 characters"),
        (
            RegisterRequest::new("x".repeat(257)),
            "id",
            "1 to 256 characters",
        ),
        (RegisterRequest::new("has space"), "id", "whitespace"),
        (RegisterRequest::new("tab\there"), "id", "whitespace"),
        (RegisterRequest::new("bell\u{7}"), "id", "control"),
        (RegisterRequest::new("nbsp\u{a0}x"), "id", "whitespace"),
        (
            RegisterRequest::new("w").roles((0..33).map(|i| format!("r{i}"))),
            "roles",
            "at most 32 roles",
        ),
        (RegisterRequest::new("w").roles([""]), "roles[0]", "1 to 64"),
        (
            RegisterRequest::new("w").roles(["ok", &"r".repeat(65)]),
            "roles[1]",
            "1 to 64",
        ),
        (
            RegisterRequest::new("w").roles(["a\nb"]),
            "roles[0]",
            "control",
        ),
        (
            RegisterRequest::new("w").metadata(serde_json::json!({"blob": "x".repeat(8 * 1024)})),
            "metadata",
            "at most 8192 bytes",
        ),
        (
            RegisterRequest::new("w").metadata(serde_json::json!([1, 2])),
            "metadata",
            "JSON object",
        ),
        (
            RegisterRequest::new("w").metadata(serde_json::json!("text")),
            "metadata",
            "JSON object",
        ),
        (
            RegisterRequest::new("w").ttl(Duration::from_millis(999)),
            "ttl",
            "1000 ms..=3600000 ms",
        ),
        (
            RegisterRequest::new("w").ttl(Duration::from_secs(3601)),
            "ttl",
            "1000 ms..=3600000 ms",
        ),
    ];
    for (request, field, rule) in cases {
        let err = refused(&h, request.clone()).await;
        assert_eq!(err.field, field, "{request:?}");
        assert!(
            err.rule.contains(rule),
            "{request:?}: rule {:?} should mention {rule:?}",
            err.rule
        );
    }
    assert_eq!(h.coordinator.instance_count(), 0, "nothing was registered");
    assert!(h.coordinator.state().recent_events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_limits_themselves_are_accepted() {
    let h = Harness::default().await;
    let id = "é".repeat(256); // characters, not bytes
    h.coordinator
        .register(
            RegisterRequest::new(id.as_str())
                .roles((0..32).map(|i| format!("{i:0>64}")))
                .metadata(serde_json::json!({"b": "x".repeat(8 * 1024 - 8)}))
                .ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    h.coordinator
        .register(RegisterRequest::new("short-ttl").ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(h.coordinator.instance_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_re_registration_leaves_the_instance_unchanged() {
    let h = Harness::default().await;
    h.coordinator
        .register(RegisterRequest::new("w").roles(["worker"]))
        .await
        .unwrap();
    refused(&h, RegisterRequest::new("w").roles([""])).await;
    let state = h.coordinator.state();
    assert_eq!(state.instances[0].roles, ["worker"]);
}

#[tokio::test(start_paused = true)]
async fn unregister_rejects_a_malformed_id() {
    let h = Harness::default().await;
    match h.coordinator.unregister("bad id").await {
        Err(Error::Invalid(e)) => assert_eq!(e.field, "id"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_is_enforced() {
    let config = Config {
        limits: Limits {
            max_instances: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let h = Harness::start(config).await;
    h.register("a").await;
    h.register("b").await;
    assert!(matches!(
        h.coordinator.register(RegisterRequest::new("c")).await,
        Err(Error::Capacity(2))
    ));
    // Refreshing a live one is still fine.
    h.register("a").await;
}

#[tokio::test]
async fn a_bad_configuration_is_refused_at_start() {
    let bad = Config {
        ttl: Duration::from_millis(10),
        ..Config::default()
    };
    match vigil::Coordinator::start(bad).await {
        Err(Error::Config(e)) => assert_eq!(e.field, "ttl"),
        other => panic!("{other:?}"),
    }
    let no_retention = Config {
        finished_task_retention: 0,
        ..Config::default()
    };
    match vigil::Coordinator::start(no_retention).await {
        Err(Error::Config(e)) => assert_eq!(e.field, "finished_task_retention"),
        other => panic!("{other:?}"),
    }
    let no_tasks = Config {
        limits: vigil::Limits {
            max_tasks: 0,
            ..vigil::Limits::default()
        },
        ..Config::default()
    };
    match vigil::Coordinator::start(no_tasks).await {
        Err(Error::Config(e)) => assert_eq!(e.field, "max_tasks"),
        other => panic!("{other:?}"),
    }
    // The store wait must end before the call timeout, so a caller gets the store's verdict.
    for store_wait in [
        Duration::ZERO,
        Duration::from_secs(2),
        Duration::from_secs(3),
    ] {
        let late = Config {
            store_wait,
            ..Config::default()
        };
        match vigil::Coordinator::start(late).await {
            Err(Error::Config(e)) => assert_eq!(e.field, "store_wait", "{store_wait:?}"),
            other => panic!("{store_wait:?}: {other:?}"),
        }
    }
}
