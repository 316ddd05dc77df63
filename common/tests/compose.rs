//! No Docker engine runs on the development and CI machines, so the compose
//! file is checked structurally: every service the system needs is there,
//! infrastructure has health checks the roles wait on, and every
//! `BIRDSONG_*` variable it sets is one the configuration understands (a
//! typo there would otherwise silently fall back to a default).
//!
//! The cluster deployment under `deploy/` is held to the same rule here, file
//! by file, with no tools; `deploy/check.sh` renders and validates it.

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

/// Every `BIRDSONG_*` name in a file under `dir`, with the file it is in.
fn birdsong_names(dir: &std::path::Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            birdsong_names(&path, out);
            continue;
        }
        // KEDA's vendored CRDs name no setting; secrets.env is local only.
        if path.components().any(|c| c.as_os_str() == "keda")
            || path.file_name().is_some_and(|n| n == "secrets.env")
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find("BIRDSONG_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail[..len].trim_end_matches('_');
            if name.len() > "BIRDSONG_".len() {
                out.push((name.to_string(), path.clone()));
            }
            rest = &tail[len..];
        }
    }
}

#[test]
fn every_birdsong_name_under_deploy_is_a_setting() {
    let known: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"));
    let mut found = Vec::new();
    birdsong_names(dir, &mut found);
    let unknown: Vec<String> = found
        .iter()
        .filter(|(name, _)| !known.contains(name.as_str()))
        .map(|(name, path)| format!("{name} in {}", path.display()))
        .collect();
    assert!(
        unknown.is_empty(),
        "not configuration variables: {unknown:#?}"
    );
    assert!(
        found.len() >= 20,
        "expected deploy/ to configure the roles ({} names)",
        found.len()
    );
}

#[test]
fn images_are_pinned_and_workers_get_one_thread_per_cpu() {
    let doc = compose();
    for (name, service) in services(&doc) {
        let Some(image) = service.get("image").and_then(Value::as_str) else {
            continue;
        };
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "service {name:?}: image {image} is not pinned to a tag"
        );
    }
    let worker = services(&doc).get("worker").expect("worker");
    let cpus = worker
        .get("cpus")
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .expect("a CPU limit per worker replica");
    let threads: f64 = worker
        .get("environment")
        .and_then(|e| e.get("BIRDSONG_WORKER_THREADS"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .expect("BIRDSONG_WORKER_THREADS set for the workers");
    assert_eq!(
        threads,
        cpus.ceil(),
        "one analysis thread per CPU of the limit"
    );
}
