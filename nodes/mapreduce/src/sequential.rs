//! The sequential run (the lab's `mrsequential`): the reference output.

use std::path::Path;

use crate::app::{AppContext, Application};
use crate::worker::{reduce_sorted, write_atomically, WorkerError};

/// Maps every input in order, reduces all keys in sorted order and writes
/// `output` (`key value` lines). Returns the number of lines. A fault from
/// the application (the crash app) is reported as an error: use `nocrash`.
pub fn run_sequential(
    app: &dyn Application,
    context: &AppContext,
    inputs: &[String],
    output: &Path,
) -> Result<usize, WorkerError> {
    let mut pairs = Vec::new();
    for file in inputs {
        let path = context.work_dir.join(file);
        let contents = std::fs::read_to_string(&path).map_err(|source| WorkerError::Io {
            path: path.clone(),
            source,
        })?;
        let mapped = app
            .map(context, file, &contents)
            .map_err(|fault| WorkerError::Link(format!("sequential map: {fault}")))?;
        pairs.extend(mapped);
    }
    let lines = reduce_sorted(app, context, pairs)
        .map_err(|fault| WorkerError::Link(format!("sequential reduce: {fault}")))?;
    write_atomically(output, |out| {
        use std::io::Write;
        lines
            .iter()
            .try_for_each(|(key, value)| writeln!(out, "{key} {value}"))
    })?;
    Ok(lines.len())
}
