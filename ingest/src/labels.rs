//! Species labels for ingested recordings (training data).
//!
//! Two sources, chosen on the command line:
//!
//! * a CSV file with a header naming (at least) a `path` and a `species`
//!   column, in any order and any letter case; other columns are ignored, so
//!   a dataset manifest can be used as it is. A recording matches the row
//!   whose path equals the recording's path relative to the ingested root, or
//!   failing that the longest row path that is a whole-component suffix of it
//!   (so `robin/a.wav` and `a.wav` both match `2024/robin/a.wav`).
//! * the folder the recording sits in (`--label-from-folder`), with
//!   underscores turned into spaces and runs of blanks collapsed:
//!   `Red-bellied_Woodpecker/x.mp3` is a "Red-bellied Woodpecker".

use std::collections::HashMap;
use std::path::Path;

/// Label source recorded for labels read from a CSV file.
pub const CSV_SOURCE: &str = "producer";
/// Label source recorded for labels taken from folder names.
pub const FOLDER_SOURCE: &str = "folder";

/// Longest species name the schema accepts.
const MAX_SPECIES_CHARS: usize = 200;

/// A labels file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read labels file {path}: {source}")]
    Read { path: String, source: csv::Error },
    #[error("labels file {path} has no {column:?} column in its header (found: {found})")]
    MissingColumn {
        path: String,
        column: &'static str,
        found: String,
    },
    #[error("labels file {path}, line {line}: {problem}")]
    Row {
        path: String,
        line: u64,
        problem: String,
    },
}

/// How recordings get their species, if at all.
#[derive(Debug, Clone, Default)]
pub struct Labeler {
    /// Row path → species.
    by_path: HashMap<String, String>,
    /// Proper trailing part of a row path → species, `None` when rows with
    /// different species share it.
    by_suffix: HashMap<String, Option<String>>,
    from_folder: bool,
}

impl Labeler {
    /// No labels: recordings are only classified.
    pub fn none() -> Self {
        Self::default()
    }

    /// Labels from the parent folder's name.
    pub fn from_folder() -> Self {
        Self {
            from_folder: true,
            ..Self::default()
        }
    }

    /// Labels from a `path,species` CSV file.
    pub fn from_csv(path: &Path) -> Result<Self, LabelError> {
        let shown = path.display().to_string();
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_path(path)
            .map_err(|source| LabelError::Read {
                path: shown.clone(),
                source,
            })?;
        let headers = reader
            .headers()
            .map_err(|source| LabelError::Read {
                path: shown.clone(),
                source,
            })?
            .clone();
        let column = |name: &'static str| {
            headers
                .iter()
                .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
                .ok_or_else(|| LabelError::MissingColumn {
                    path: shown.clone(),
                    column: name,
                    found: headers.iter().collect::<Vec<_>>().join(","),
                })
        };
        let (path_col, species_col) = (column("path")?, column("species")?);
        let mut by_path = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|source| LabelError::Read {
                path: shown.clone(),
                source,
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let row_error = |problem: String| LabelError::Row {
                path: shown.clone(),
                line,
                problem,
            };
            let file = normalize_path(record.get(path_col).unwrap_or(""));
            let species = normalize_species(record.get(species_col).unwrap_or(""));
            if file.is_empty() && species.is_empty() {
                continue;
            }
            if file.is_empty() {
                return Err(row_error("empty path".into()));
            }
            if species.is_empty() {
                // An unlabelled row: the recording is ingested without label.
                continue;
            }
            if species.chars().count() > MAX_SPECIES_CHARS {
                return Err(row_error(format!(
                    "species name longer than {MAX_SPECIES_CHARS} characters"
                )));
            }
            if let Some(previous) = by_path.get(&file)
                && previous != &species
            {
                return Err(row_error(format!(
                    "{file} is labelled both {previous:?} and {species:?}"
                )));
            }
            by_path.insert(file, species);
        }
        let mut by_suffix: HashMap<String, Option<String>> = HashMap::new();
        for (file, species) in &by_path {
            let mut rest = file.as_str();
            while let Some((_, tail)) = rest.split_once('/') {
                by_suffix
                    .entry(tail.to_string())
                    .and_modify(|known| {
                        if known.as_ref() != Some(species) {
                            *known = None;
                        }
                    })
                    .or_insert_with(|| Some(species.clone()));
                rest = tail;
            }
        }
        Ok(Self {
            by_path,
            by_suffix,
            from_folder: false,
        })
    }

    /// Number of rows of the CSV file (0 for folder labels).
    pub fn csv_rows(&self) -> usize {
        self.by_path.len()
    }

    /// The species and label source for a recording, given its path
    /// relative to the ingested root and the name of its folder.
    pub fn species_for(
        &self,
        relative: &str,
        folder: Option<&str>,
    ) -> Option<(String, &'static str)> {
        if self.from_folder {
            let species = normalize_species(folder?);
            if species.is_empty() || species.chars().count() > MAX_SPECIES_CHARS {
                return None;
            }
            return Some((species, FOLDER_SOURCE));
        }
        if self.by_path.is_empty() {
            return None;
        }
        let relative = normalize_path(relative);
        let mut rest = relative.as_str();
        loop {
            if let Some(species) = self.by_path.get(rest) {
                return Some((species.clone(), CSV_SOURCE));
            }
            match self.by_suffix.get(rest) {
                Some(Some(species)) => return Some((species.clone(), CSV_SOURCE)),
                Some(None) => return None,
                None => {}
            }
            rest = rest.split_once('/')?.1;
        }
    }
}

/// `a\b/./c` → `a/b/c`: forward slashes, no empty or `.` components.
pub fn normalize_path(path: &str) -> String {
    path.split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// `Red-bellied_Woodpecker ` → `Red-bellied Woodpecker`.
pub fn normalize_species(name: &str) -> String {
    name.replace('_', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn csv(text: &str) -> Result<Labeler, LabelError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        Labeler::from_csv(f.path())
    }

    #[test]
    fn exact_then_longest_suffix() {
        let l = csv("species,PATH,other\nRobin,robin/a.wav,x\nWren,a.wav,y\nJay,./b\\c.wav,z\n")
            .unwrap();
        assert_eq!(l.csv_rows(), 3);
        assert_eq!(
            l.species_for("robin/a.wav", None),
            Some(("Robin".into(), CSV_SOURCE))
        );
        assert_eq!(
            l.species_for("2024/robin/a.wav", None).map(|s| s.0),
            Some("Robin".into())
        );
        assert_eq!(
            l.species_for("wren/a.wav", None).map(|s| s.0),
            Some("Wren".into())
        );
        assert_eq!(
            l.species_for("b/c.wav", None).map(|s| s.0),
            Some("Jay".into())
        );
        // The recording's path may also be the shorter one.
        assert_eq!(
            l.species_for("c.wav", None).map(|s| s.0),
            Some("Jay".into())
        );
        // Part of a component is not a match.
        assert_eq!(l.species_for("xa.wav", None), None);
        assert_eq!(l.species_for("x/c.wav.bak", None), None);
    }

    #[test]
    fn ties_between_species_leave_the_recording_unlabelled() {
        let l = csv("path,species
robin/x.wav,Robin
wren/x.wav,Wren
robin/y.wav,Robin
owl/y.wav,Robin
")
        .unwrap();
        assert_eq!(l.species_for("x.wav", None), None);
        assert_eq!(l.species_for("2024/x.wav", None), None);
        assert_eq!(
            l.species_for("y.wav", None).map(|s| s.0),
            Some("Robin".into())
        );
        assert_eq!(
            l.species_for("wren/x.wav", None).map(|s| s.0),
            Some("Wren".into())
        );
    }

    #[test]
    fn conflicting_rows_and_missing_columns_are_errors() {
        let err = csv("path,species\na.wav,Robin\na.wav,Wren\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = csv("file,species\na.wav,Robin\n").unwrap_err();
        assert!(matches!(
            err,
            LabelError::MissingColumn { column: "path", .. }
        ));
        // The same label twice is fine; an empty species leaves it unlabelled.
        let l = csv("path,species\na.wav,Robin\na.wav,Robin\nb.wav,\n").unwrap();
        assert_eq!(l.species_for("b.wav", None), None);
    }

    #[test]
    fn folder_names_become_species() {
        let l = Labeler::from_folder();
        assert_eq!(
            l.species_for("x.mp3", Some("Red-bellied_Woodpecker")),
            Some(("Red-bellied Woodpecker".into(), FOLDER_SOURCE))
        );
        assert_eq!(l.species_for("x.mp3", Some(" _ ")), None);
        assert_eq!(l.species_for("x.mp3", None), None);
        assert_eq!(Labeler::none().species_for("x.mp3", Some("Robin")), None);
    }
}
