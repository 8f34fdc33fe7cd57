//! The MapReduce checks, as pure functions over what the run collected.
//!
//! * output: the job's `mr-out-*` lines, sorted, equal the sequential run's (the lab's
//!   `sort mr-out* | grep . > ...; cmp`);
//! * early exit: the output seen when the first worker exited on its own is already the final
//!   output (the lab's `wait -n` then compare);
//! * workers exit: every worker we did not kill ended by itself once the job was done;
//! * faults: each fault the run was asked to inject happened at least once (a run whose job
//!   ended before its nemesis acted proves nothing about crashes).

use std::collections::BTreeMap;

use serde::Serialize;

/// Lines shown of each kind of difference.
const DIFFERENCES_SHOWN_MAX: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputCheck {
    pub valid: bool,
    pub expected_lines: usize,
    pub actual_lines: usize,
    /// Lines the sequential run has and the job lacks (first few).
    pub missing: Vec<String>,
    /// Lines the job has and the sequential run lacks (first few).
    pub unexpected: Vec<String>,
}

/// The non-empty lines of `text`, sorted (the lab's `sort | grep .`).
pub fn sorted_lines<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut lines: Vec<String> = texts
        .into_iter()
        .flat_map(str::lines)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Compares sorted line lists as multisets, naming the first differences.
pub fn compare_output(expected: &[String], actual: &[String]) -> OutputCheck {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for line in expected {
        *counts.entry(line).or_default() += 1;
    }
    for line in actual {
        *counts.entry(line).or_default() -= 1;
    }
    let mut missing = Vec::new();
    let mut unexpected = Vec::new();
    for (line, count) in counts {
        if count > 0 && missing.len() < DIFFERENCES_SHOWN_MAX {
            missing.push(line.to_string());
        } else if count < 0 && unexpected.len() < DIFFERENCES_SHOWN_MAX {
            unexpected.push(line.to_string());
        }
    }
    OutputCheck {
        valid: expected == actual,
        expected_lines: expected.len(),
        actual_lines: actual.len(),
        missing,
        unexpected,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EarlyExitCheck {
    pub valid: bool,
    /// The worker that exited first on its own, if any did.
    pub first_worker: Option<String>,
    /// Digest of the sorted output when it exited, and at the end.
    pub output_at_first_exit: Option<String>,
    pub output_at_end: Option<String>,
    pub message: String,
}

/// The lab's early-exit test: when the first worker exits by itself the output must already be
/// complete. With no worker exiting by itself the check fails: workers must exit when done.
pub fn early_exit(
    first_worker: Option<&str>,
    at_first_exit: Option<&str>,
    at_end: Option<&str>,
) -> EarlyExitCheck {
    let (valid, message) = match (first_worker, at_first_exit, at_end) {
        (None, _, _) => (false, "no worker exited by itself".to_string()),
        (Some(worker), Some(first), Some(end)) if first == end => (
            true,
            format!("{worker} exited first; the output was already complete"),
        ),
        (Some(worker), Some(_), Some(_)) => (
            false,
            format!("{worker} exited while the output was still changing"),
        ),
        (Some(worker), _, _) => (
            false,
            format!("could not read the output when {worker} exited"),
        ),
    };
    EarlyExitCheck {
        valid,
        first_worker: first_worker.map(String::from),
        output_at_first_exit: at_first_exit.map(String::from),
        output_at_end: at_end.map(String::from),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        sorted_lines([text])
    }

    #[test]
    fn equal_outputs_pass_whatever_the_file_order() {
        let expected = lines("a 1\nb 2\n\nc 3\n");
        let actual = sorted_lines(["c 3\n", "", "b 2\na 1\n"]);
        let check = compare_output(&expected, &actual);
        assert!(check.valid, "{check:?}");
        assert_eq!(check.actual_lines, 3);
    }

    #[test]
    fn a_wrong_count_a_lost_line_and_a_duplicate_fail_and_are_named() {
        let expected = lines("a 1\nb 2\nc 3\n");
        let wrong = compare_output(&expected, &lines("a 1\nb 3\nc 3\n"));
        assert!(!wrong.valid);
        assert_eq!(wrong.missing, ["b 2"]);
        assert_eq!(wrong.unexpected, ["b 3"]);
        let lost = compare_output(&expected, &lines("a 1\nc 3\n"));
        assert!(!lost.valid);
        assert_eq!(lost.missing, ["b 2"]);
        let duplicated = compare_output(&expected, &lines("a 1\nb 2\nb 2\nc 3\n"));
        assert!(!duplicated.valid);
        assert_eq!(duplicated.unexpected, ["b 2"]);
    }

    #[test]
    fn early_exit_passes_only_when_the_output_was_final() {
        assert!(early_exit(Some("worker-1"), Some("x"), Some("x")).valid);
        let early = early_exit(Some("worker-1"), Some("x"), Some("y"));
        assert!(!early.valid);
        assert!(
            early.message.contains("still changing"),
            "{}",
            early.message
        );
        assert!(!early_exit(None, None, Some("y")).valid);
        assert!(!early_exit(Some("worker-2"), None, Some("y")).valid);
    }
}
