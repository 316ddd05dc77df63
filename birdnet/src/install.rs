//! Finding and verifying an install made by `scripts/birdnet/install.sh`.
//!
//! The project never ships BirdNET (its licence is CC BY-NC-SA 4.0): a user installs it
//! outside the repository, and everything here reads that install. The ONNX file is
//! checked against the sha256 the installer recorded before it is parsed, so a
//! half-copied or replaced file is refused with a message instead of giving wrong
//! embeddings.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{BirdnetError, Result};

/// Environment variable naming the install directory.
pub const DIR_ENV: &str = "BIRDSONG_BIRDNET_DIR";
/// Written by the installer last, so its presence means a complete install.
pub const MANIFEST_FILE: &str = "manifest.json";
/// One `Scientific name_Common name` per output, in output order.
pub const LABELS_FILE: &str = "labels.txt";

/// Where the installer puts BirdNET unless told otherwise: `$BIRDSONG_BIRDNET_DIR`, else
/// `$HOME/.local/share/birdsong/birdnet` (the installer's default too).
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/birdsong/birdnet")
}

#[derive(Deserialize)]
struct Manifest {
    onnx: OnnxEntry,
}

#[derive(Deserialize)]
struct OnnxEntry {
    file: String,
    sha256: String,
}

/// A located install whose network file matches its manifest.
#[derive(Debug, Clone)]
pub struct Install {
    /// The install directory.
    pub dir: PathBuf,
    /// The ONNX network.
    pub onnx_path: PathBuf,
    /// Its bytes, already verified.
    pub onnx: Vec<u8>,
    /// Its sha256 (hex): identifies the exact network in artifacts and logs.
    pub onnx_sha256: String,
    /// BirdNET's species, in output order.
    pub labels: Vec<String>,
}

impl Install {
    /// Whether `dir` holds a complete install (without reading the network).
    pub fn exists(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).is_file()
    }

    /// Reads and verifies the install in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(BirdnetError::NotInstalled {
                dir: dir.to_path_buf(),
                missing: MANIFEST_FILE.into(),
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&read(&manifest_path)?).map_err(|e| BirdnetError::Manifest {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?;
        let file = Path::new(&manifest.onnx.file);
        if file.components().count() != 1 {
            return Err(BirdnetError::Manifest {
                path: manifest_path,
                reason: format!("onnx.file {:?} is not a file name", manifest.onnx.file),
            });
        }
        let onnx_path = dir.join(file);
        if !onnx_path.is_file() {
            return Err(BirdnetError::NotInstalled {
                dir: dir.to_path_buf(),
                missing: manifest.onnx.file,
            });
        }
        let onnx = read(&onnx_path)?;
        let actual = hex::encode(Sha256::digest(&onnx));
        if !actual.eq_ignore_ascii_case(&manifest.onnx.sha256) {
            return Err(BirdnetError::Checksum {
                path: onnx_path,
                expected: manifest.onnx.sha256,
                actual,
            });
        }
        let labels_path = dir.join(LABELS_FILE);
        if !labels_path.is_file() {
            return Err(BirdnetError::NotInstalled {
                dir: dir.to_path_buf(),
                missing: LABELS_FILE.into(),
            });
        }
        let labels = String::from_utf8_lossy(&read(&labels_path)?)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        Ok(Install {
            dir: dir.to_path_buf(),
            onnx_path,
            onnx,
            onnx_sha256: actual,
            labels,
        })
    }
}

/// Set to make a missing install an error in [`for_test`] (so that a CI run that
/// is meant to exercise BirdNET cannot pass by skipping it).
pub const REQUIRE_ENV: &str = "BIRDSONG_REQUIRE_BIRDNET";

/// The default install, for a test that needs BirdNET: `Ok(None)` after printing
/// that the test skipped when nothing is installed, unless [`REQUIRE_ENV`] is set,
/// which makes that an error.
pub fn for_test() -> Result<Option<Install>> {
    let dir = default_dir();
    if Install::exists(&dir) {
        return Install::open(&dir).map(Some);
    }
    if std::env::var_os(REQUIRE_ENV).is_some() {
        return Err(BirdnetError::NotInstalled {
            dir,
            missing: format!("{MANIFEST_FILE} ({REQUIRE_ENV} is set)"),
        });
    }
    eprintln!(
        "skipped: BirdNET is not installed in {} (scripts/birdnet/install.sh --accept-license)",
        dir.display()
    );
    Ok(None)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| BirdnetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_install_says_how_to_install() {
        let dir = std::env::temp_dir().join("birdsong-birdnet-missing-install");
        let err = Install::open(&dir).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("install.sh --accept-license"), "{text}");
        assert!(text.contains(MANIFEST_FILE), "{text}");
    }

    #[test]
    fn a_replaced_network_is_refused_by_its_checksum() {
        let dir = tempdir("checksum");
        std::fs::write(
            dir.join(MANIFEST_FILE),
            r#"{"onnx": {"file": "net.onnx", "sha256": "00"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("net.onnx"), b"not a network").unwrap();
        std::fs::write(dir.join(LABELS_FILE), "A a_B\n").unwrap();
        let err = Install::open(&dir).unwrap_err();
        assert!(matches!(err, BirdnetError::Checksum { .. }), "{err}");
    }

    #[test]
    fn a_manifest_cannot_point_outside_the_install() {
        let dir = tempdir("escape");
        std::fs::write(
            dir.join(MANIFEST_FILE),
            r#"{"onnx": {"file": "../../etc/passwd", "sha256": "00"}}"#,
        )
        .unwrap();
        let err = Install::open(&dir).unwrap_err();
        assert!(matches!(err, BirdnetError::Manifest { .. }), "{err}");
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("birdsong-birdnet-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
