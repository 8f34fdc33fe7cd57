//! Readers and writers for history files: our JSON lines, Jepsen EDN,
//! porcupine's kv logs (EDN maps, one per line) and porcupine's Jepsen etcd logs.

use std::path::Path;

use crate::history::{Format, History, ParseError};

pub mod edn;
pub mod etcd_log;
pub mod jsonl;

/// Guesses the format from the first meaningful characters.
pub fn detect(text: &str) -> Option<Format> {
    for line in text.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with(';') {
            continue;
        }
        if t.starts_with("INFO") {
            return Some(Format::PorcupineEtcd);
        }
        if t.starts_with("{\"") || t.starts_with("{ \"") {
            return Some(Format::Jsonl);
        }
        if t.starts_with("{:") {
            // One EDN map per line with a :key is porcupine's kv log.
            if t.contains(":key ") && t.trim_end().ends_with('}') {
                return Some(Format::PorcupineKv);
            }
            return Some(Format::Edn);
        }
        if t.starts_with('[') || t.starts_with('(') || t.starts_with('{') {
            return Some(Format::Edn);
        }
        return None;
    }
    // Empty (or comments only): any reader gives an empty history.
    Some(Format::Jsonl)
}

/// Parses `text` in a concrete format (not `Auto`).
pub fn parse(text: &str, format: Format, path: &Path) -> Result<History, ParseError> {
    match format {
        Format::Jsonl => jsonl::parse(text, path),
        Format::Edn | Format::PorcupineKv => edn::parse_history(text, path),
        Format::PorcupineEtcd => etcd_log::parse(text, path),
        Format::Auto => match detect(text) {
            Some(Format::Auto) | None => Err(ParseError::UnknownFormat {
                path: path.to_path_buf(),
            }),
            Some(f) => parse(text, f, path),
        },
    }
}
