//! The results folder of DESIGN.md's "Contracts":
//! `results/<test>/<YYYYmmddTHHMMSS>/` with `history.jsonl`, `history.edn`, `results.json`,
//! `nodes/<name>/` logs, and `results/<test>/latest` pointing at the newest run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("bad test name `{0}` (letters, digits, - and _ only)")]
    BadName(String),
}

/// One run's folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
    pub test: String,
    pub timestamp: String,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ResultsError {
    let path = path.to_path_buf();
    move |source| ResultsError::Io { what, path, source }
}

impl RunDir {
    /// Creates `<root>/<test>/<timestamp>/` (with `nodes/`) and points `latest` at it. When two
    /// runs start in the same second the later gets a `-2`, `-3`... suffix.
    pub fn create(
        root: &Path,
        test: &str,
        now: chrono::DateTime<chrono::Local>,
    ) -> Result<Self, ResultsError> {
        let name_ok = !test.is_empty()
            && test
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ResultsError::BadName(test.to_string()));
        }
        let base = now.format("%Y%m%dT%H%M%S").to_string();
        let test_dir = root.join(test);
        fs::create_dir_all(&test_dir).map_err(io_err("creating", &test_dir))?;
        let mut timestamp = base.clone();
        let mut attempt = 1;
        let path = loop {
            let candidate = test_dir.join(&timestamp);
            match fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                    timestamp = format!("{base}-{attempt}");
                }
                Err(e) => return Err(io_err("creating", &candidate)(e)),
            }
        };
        fs::create_dir_all(path.join("nodes")).map_err(io_err("creating", &path))?;
        let run = RunDir {
            path,
            test: test.to_string(),
            timestamp,
        };
        run.point_latest()?;
        Ok(run)
    }

    /// Opens an existing run folder (for `control analyze`).
    pub fn open(path: &Path) -> Result<Self, ResultsError> {
        if !path.join("history.jsonl").exists() {
            return Err(ResultsError::Io {
                what: "no history.jsonl in",
                path: path.to_path_buf(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let canonical = fs::canonicalize(path).map_err(io_err("resolving", path))?;
        let name = |p: Option<&Path>| {
            p.and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Ok(RunDir {
            timestamp: name(Some(&canonical)),
            test: name(canonical.parent()),
            path: canonical,
        })
    }

    /// `latest` -> `<timestamp>` (relative, so the tree can be moved), replaced atomically.
    fn point_latest(&self) -> Result<(), ResultsError> {
        let Some(test_dir) = self.path.parent() else {
            return Ok(());
        };
        let temporary = test_dir.join(format!(".latest-{}", std::process::id()));
        let _ = fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&self.timestamp, &temporary)
            .map_err(io_err("linking", &temporary))?;
        let latest = test_dir.join("latest");
        fs::rename(&temporary, &latest).map_err(io_err("renaming to", &latest))
    }

    pub fn history_jsonl(&self) -> PathBuf {
        self.path.join("history.jsonl")
    }

    pub fn history_edn(&self) -> PathBuf {
        self.path.join("history.edn")
    }

    pub fn results_json(&self) -> PathBuf {
        self.path.join("results.json")
    }

    pub fn nemesis_jsonl(&self) -> PathBuf {
        self.path.join("nemesis.jsonl")
    }

    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.path.join("nodes").join(node)
    }

    /// Writes `results.json` (pretty, then renamed into place so a reader never sees half).
    pub fn write_results(&self, results: &Value) -> Result<(), ResultsError> {
        let path = self.results_json();
        let temporary = self.path.join(".results.json.tmp");
        let text = serde_json::to_string_pretty(results).unwrap_or_else(|_| "{}".into());
        fs::write(&temporary, text + "\n").map_err(io_err("writing", &temporary))?;
        fs::rename(&temporary, &path).map_err(io_err("renaming to", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn layout_and_latest_link() {
        let root = tempfile::tempdir().unwrap();
        let now = chrono::Local
            .with_ymd_and_hms(2026, 11, 25, 13, 4, 5)
            .unwrap();
        let first = RunDir::create(root.path(), "standin", now).unwrap();
        assert_eq!(first.timestamp, "20261125T130405");
        assert!(first.path.join("nodes").is_dir());
        let second = RunDir::create(root.path(), "standin", now).unwrap();
        assert_eq!(second.timestamp, "20261125T130405-2");
        let latest = root.path().join("standin/latest");
        assert_eq!(
            fs::read_link(&latest).unwrap(),
            PathBuf::from("20261125T130405-2")
        );
        second
            .write_results(&serde_json::json!({"valid": true}))
            .unwrap();
        let back: Value =
            serde_json::from_str(&fs::read_to_string(latest.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(back["valid"], true);
        assert!(RunDir::create(root.path(), "../x", now).is_err());
    }

    #[test]
    fn open_requires_a_history() {
        let root = tempfile::tempdir().unwrap();
        assert!(RunDir::open(root.path()).is_err());
        fs::write(root.path().join("history.jsonl"), "").unwrap();
        assert!(RunDir::open(root.path()).is_ok());
    }
}
