//! Checks that a service binary answers `--help` and `--version` without starting.
//!
//! The binaries read their settings from the environment, so an argument is never
//! needed to run them; the danger is the opposite, a `--help` that starts a worker.
//! The check points every service at addresses where nothing listens: a binary that
//! tried to connect would retry (the worker, waiting for its services) or fail, instead
//! of printing and exiting 0.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a binary may take to print its help. Generous: it guards against a
/// process that started serving, not a slow one.
const PRINT_WITHIN: Duration = Duration::from_secs(30);

fn run(exe: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(exe)
        .args(args)
        .env(
            "BIRDSONG_DATABASE_URL",
            "postgres://nobody@127.0.0.1:9/none",
        )
        .env("BIRDSONG_AMQP_URL", "amqp://guest:guest@127.0.0.1:9/%2f")
        .env("BIRDSONG_S3_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
    let started = Instant::now();
    while child.try_wait().expect("waiting for the binary").is_none() {
        if started.elapsed() > PRINT_WITHIN {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting output");
            panic!(
                "{} {args:?} was still running after {PRINT_WITHIN:?}: it started instead of printing\n{}",
                exe.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting output")
}

/// Asserts that `exe` (the binary `name`) prints its help and version and exits 0,
/// and refuses an unknown argument with exit code 2, connecting to nothing.
pub fn assert_prints_and_exits(exe: &Path, name: &str) {
    let help = run(exe, &["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success(),
        "{name} --help: {:?}\n{}",
        help.status,
        String::from_utf8_lossy(&help.stderr)
    );
    assert!(
        text.contains("BIRDSONG_DATABASE_URL"),
        "{name} --help: {text}"
    );
    assert!(
        help.stderr.is_empty(),
        "{name} --help wrote to stderr: {}",
        String::from_utf8_lossy(&help.stderr)
    );

    let version = run(exe, &["--version"]);
    assert!(version.status.success(), "{name} --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    );

    let refused = run(exe, &["--no-such-flag"]);
    assert_eq!(refused.status.code(), Some(2), "{name} --no-such-flag");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--no-such-flag"));
}
