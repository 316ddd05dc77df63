//! Which recordings train, validate and judge a model.
//!
//! Successive versions are compared on the same holdout, so a recording's
//! split must not depend on when it was labelled or what else exists: it is
//! derived from its content hash alone. `u = first 8 bytes of
//! sha256(hex content hash ‖ "birdsong-split")` as a fraction of 2⁶⁴; below
//! 0.20 the recording is in the holdout, below 0.35 in the validation split,
//! otherwise it trains. Salting the hash keeps the split independent of the
//! object keys (which are the content hash itself).
//!
//! The one exception is a species with too few recordings: every labelled
//! species must have at least one training recording, or the model could
//! not learn it. If the hash leaves a species none, its validation
//! recordings train instead; if it still has none, the holdout recording
//! with the largest `u` trains. So a species with a single recording always
//! trains, and the assignments of such a species may change as it gains
//! recordings (a species with a training recording of its own never moves).

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Upper bound of `u` for the holdout.
pub const HOLDOUT_BELOW: f64 = 0.20;
/// Upper bound of `u` for the validation split (from [`HOLDOUT_BELOW`]).
pub const VALIDATION_BELOW: f64 = 0.35;

/// Where a recording goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Holdout,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Holdout => "holdout",
        }
    }
}

/// The recording's position in [0, 1), from its content hash.
pub fn position(sha256: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    h.update(b"birdsong-split");
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) as f64 / 2f64.powi(64)
}

/// The split of one recording by its hash alone.
pub fn by_hash(sha256: &str) -> Split {
    let u = position(sha256);
    if u < HOLDOUT_BELOW {
        Split::Holdout
    } else if u < VALIDATION_BELOW {
        Split::Validation
    } else {
        Split::Train
    }
}

/// Assigns every (content hash, label) pair a split, in input order,
/// applying the small-species rule (see the module docs).
pub fn assign(recordings: &[(&str, &str)]) -> Vec<Split> {
    let mut out: Vec<Split> = recordings.iter().map(|(sha, _)| by_hash(sha)).collect();
    let mut by_class: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, label)) in recordings.iter().enumerate() {
        by_class.entry(label).or_default().push(i);
    }
    for members in by_class.values() {
        if members.iter().any(|&i| out[i] == Split::Train) {
            continue;
        }
        for &i in members {
            if out[i] == Split::Validation {
                out[i] = Split::Train;
            }
        }
        if members.iter().any(|&i| out[i] == Split::Train) {
            continue;
        }
        if let Some(&last) = members
            .iter()
            .max_by(|&&a, &&b| position(recordings[a].0).total_cmp(&position(recordings[b].0)))
        {
            out[last] = Split::Train;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(i: usize) -> String {
        hex::encode(Sha256::digest(i.to_le_bytes()))
    }

    #[test]
    fn fractions_are_close_to_the_targets() {
        let n = 20_000;
        let mut counts = BTreeMap::new();
        for i in 0..n {
            *counts.entry(by_hash(&sha(i))).or_insert(0usize) += 1;
        }
        let share = |s| counts[&s] as f64 / n as f64;
        assert!((share(Split::Holdout) - 0.20).abs() < 0.01);
        assert!((share(Split::Validation) - 0.15).abs() < 0.01);
        assert!((share(Split::Train) - 0.65).abs() < 0.01);
    }

    #[test]
    fn a_recording_keeps_its_split_whatever_else_is_labelled() {
        let shas: Vec<String> = (0..200).map(sha).collect();
        let few: Vec<(&str, &str)> = shas[..100].iter().map(|s| (s.as_str(), "a")).collect();
        let many: Vec<(&str, &str)> = shas.iter().map(|s| (s.as_str(), "a")).collect();
        let a = assign(&few);
        let b = assign(&many);
        assert_eq!(a[..], b[..100]);
    }

    #[test]
    fn every_species_gets_a_training_recording() {
        // Find recordings that the hash puts in the holdout and validation.
        let shas: Vec<String> = (0..500).map(sha).collect();
        let holdout: Vec<&str> = shas
            .iter()
            .map(String::as_str)
            .filter(|s| by_hash(s) == Split::Holdout)
            .take(2)
            .collect();
        let validation: Vec<&str> = shas
            .iter()
            .map(String::as_str)
            .filter(|s| by_hash(s) == Split::Validation)
            .take(1)
            .collect();
        // One species with a single holdout recording: it trains.
        assert_eq!(assign(&[(holdout[0], "solo")]), vec![Split::Train]);
        // Two holdout recordings: the one further along trains.
        let two = assign(&[(holdout[0], "x"), (holdout[1], "x")]);
        assert_eq!(two.iter().filter(|s| **s == Split::Train).count(), 1);
        assert_eq!(two.iter().filter(|s| **s == Split::Holdout).count(), 1);
        // A validation recording trains before a holdout one is moved.
        let mixed = assign(&[(holdout[0], "y"), (validation[0], "y")]);
        assert_eq!(mixed, vec![Split::Holdout, Split::Train]);
    }
}
