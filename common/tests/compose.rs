//! No Docker engine runs on the development and CI machines, so the compose
//! file is checked structurally: every service the system needs is there,
//! infrastructure has health checks the roles wait on, and every
//! `BIRDSONG_*` variable it sets is one the configuration understands (a
//! typo there would otherwise silently fall back to a default).

use std::collections::BTreeSet;

use birdsong_common::config::SETTINGS;
use serde_yaml::Value;

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml at the repository root");
    let mut doc: Value = serde_yaml::from_str(&text).expect("valid YAML");
    doc.apply_merge().expect("merge keys resolve");
    doc
}

fn services(doc: &Value) -> &serde_yaml::Mapping {
    doc.get("services")
        .and_then(Value::as_mapping)
        .expect("a services mapping")
}

#[test]
fn every_service_is_defined() {
    let doc = compose();
    let names: BTreeSet<&str> = services(&doc).keys().filter_map(Value::as_str).collect();
    for needed in [
        "postgres",
        "rabbitmq",
        "minio",
        "minio-init",
        "api",
        "worker",
        "retrainer",
        "producer",
    ] {
        assert!(names.contains(needed), "service {needed} missing");
    }
}

#[test]
fn every_birdsong_variable_is_known_to_the_configuration() {
    let doc = compose();
    let known: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
    let mut checked = 0;
    for (name, service) in services(&doc) {
        let Some(env) = service.get("environment").and_then(Value::as_mapping) else {
            continue;
        };
        for key in env.keys().filter_map(Value::as_str) {
            if key.starts_with("BIRDSONG_") {
                assert!(
                    known.contains(key),
                    "{key} (service {name:?}) is not a configuration variable"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "expected the roles to be configured ({checked})"
    );
}

#[test]
fn roles_wait_for_healthy_infrastructure_and_run_their_binary() {
    let doc = compose();
    let svcs = services(&doc);
    for infra in ["postgres", "rabbitmq", "minio"] {
        assert!(
            svcs.get(infra).and_then(|s| s.get("healthcheck")).is_some(),
            "{infra} needs a health check"
        );
    }
    for role in ["api", "worker", "retrainer", "producer"] {
        let svc = svcs.get(role).expect(role);
        let deps = svc
            .get("depends_on")
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{role} must declare depends_on"));
        for (dep, cond) in deps {
            let dep = dep.as_str().unwrap();
            assert!(svcs.contains_key(dep), "{role} depends on unknown {dep}");
            let condition = cond.get("condition").and_then(Value::as_str);
            assert!(
                matches!(
                    condition,
                    Some("service_healthy") | Some("service_completed_successfully")
                ),
                "{role} must wait for {dep} to be ready, not just started"
            );
        }
        let cmd = svc
            .get("command")
            .or_else(|| svc.get("entrypoint"))
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{role} must name its binary"));
        assert_eq!(cmd, format!("birdsong-{role}"));
        let manifest = format!("{}/../{role}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&manifest).expect(&manifest);
        assert!(
            text.contains(&format!("name = \"birdsong-{role}\"")),
            "{manifest} must build birdsong-{role}"
        );
    }
}
