//! Links libsoxr, the resampler of `src/resample.rs`.
//!
//! pkg-config finds it wherever the system installed it (Debian, Fedora,
//! Homebrew's prefix, a custom `PKG_CONFIG_PATH`); without a `soxr.pc` we
//! fall back to the linker's default search path and say what to install if
//! that fails too.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("0.1.1")
        .probe("soxr")
    {
        println!(
            "cargo:warning=libsoxr not found by pkg-config ({e}); trying -lsoxr. \
             If linking fails, install libsoxr-dev (Debian/Ubuntu), soxr-devel (Fedora) \
             or libsoxr (Homebrew)."
        );
        println!("cargo:rustc-link-lib=soxr");
    }
}
