//! `birdsong-api --help` and `--version` print and exit without connecting to anything.

#[test]
fn help_and_version_print_and_exit() {
    birdsong_testkit::cli::assert_prints_and_exits(
        std::path::Path::new(env!("CARGO_BIN_EXE_birdsong-api")),
        "birdsong-api",
    );
}
