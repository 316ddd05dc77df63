//! The command line of the service binaries (`birdsong-worker`, `birdsong-api`,
//! `birdsong-migrate`), which take every setting from `BIRDSONG_*` variables.
//!
//! Without this, `birdsong-worker --help` started a worker: a person trying the
//! binary got a process waiting for the broker instead of an answer. `--help`
//! lists the settings (from [`crate::config::SETTINGS`], so it cannot drift from
//! what is read) and `--version` prints the version; both exit before anything is
//! configured or connected, and any other argument is refused with exit code 2.

use crate::config::SETTINGS;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// No arguments: run the service.
    Run,
    /// Print this to standard output and exit 0 (`--help`, `--version`).
    Print(String),
    /// Print this to standard error and exit 2 (an argument the binary does not take).
    Refuse(String),
}

/// Reads `args` (without the program name) for the binary `name`, described by `about`.
pub fn parse<I>(name: &str, version: &str, about: &str, args: I) -> Invocation
where
    I: IntoIterator<Item = String>,
{
    match args.into_iter().next() {
        None => Invocation::Run,
        Some(arg) => match arg.as_str() {
            "-h" | "--help" | "help" => Invocation::Print(help(name, about)),
            "-V" | "--version" => Invocation::Print(format!("{name} {version}\n")),
            _ => Invocation::Refuse(format!(
                "{name}: unexpected argument '{arg}'\n\nUsage: {name} [--help | --version]\n\
                 It takes its settings from BIRDSONG_* environment variables; {name} --help lists them.\n"
            )),
        },
    }
}

/// Handles the process's own arguments: returns when the service should run,
/// otherwise prints and exits.
pub fn service_args(name: &str, version: &str, about: &str) {
    match parse(name, version, about, std::env::args().skip(1)) {
        Invocation::Run => {}
        Invocation::Print(text) => {
            print!("{text}");
            std::process::exit(0);
        }
        Invocation::Refuse(text) => {
            eprint!("{text}");
            std::process::exit(2);
        }
    }
}

fn help(name: &str, about: &str) -> String {
    let mut out = format!(
        "{about}\n\nUsage: {name} [--help | --version]\n\n\
         Settings (environment variables, with their defaults):\n"
    );
    for s in SETTINGS {
        let default = if s.default.is_empty() {
            "(empty)"
        } else {
            s.default
        };
        out.push_str(&format!("  {}={}\n      {}\n", s.name, default, s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Invocation {
        parse(
            "birdsong-test",
            "1.2.3",
            "Does a test.",
            args.iter().map(|a| a.to_string()),
        )
    }

    #[test]
    fn no_arguments_runs_the_service() {
        assert_eq!(run(&[]), Invocation::Run);
    }

    #[test]
    fn help_lists_every_setting_and_version_prints_the_version() {
        for flag in ["--help", "-h"] {
            let Invocation::Print(text) = run(&[flag]) else {
                panic!("{flag} must print");
            };
            assert!(text.starts_with("Does a test."));
            for s in SETTINGS {
                assert!(text.contains(s.name), "{} missing from --help", s.name);
            }
        }
        assert_eq!(
            run(&["--version"]),
            Invocation::Print("birdsong-test 1.2.3\n".into())
        );
        assert_eq!(run(&["-V"]), run(&["--version"]));
    }

    #[test]
    fn anything_else_is_refused_with_a_pointer_to_help() {
        let Invocation::Refuse(text) = run(&["--threads", "4"]) else {
            panic!("must refuse");
        };
        assert!(text.contains("unexpected argument '--threads'"));
        assert!(text.contains("birdsong-test --help"));
    }
}
