//! The run's verdicts and what is written about them: `results.json`, `progress.jsonl` and
//! `report.html`. Pure over what [`super::driver`] collected, except for writing the files.

use std::fs;
use std::time::Duration;

use serde_json::{json, Value};

use super::check::{self, EarlyExitCheck, OutputCheck};
use super::monitor::Sample;
use super::report;
use super::{MrError, MrEvent, MrOptions};
use crate::results::RunDir;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The run's verdicts.
pub(super) struct Verdicts {
    output: Option<OutputCheck>,
    early_exit: EarlyExitCheck,
    /// Workers that had to be stopped because they never exited.
    not_exited: Vec<String>,
    /// Fault name -> times it was applied without error.
    faults_applied: Vec<(String, usize)>,
    faults_missing: Vec<String>,
    job_time: Option<Duration>,
}

impl Verdicts {
    pub(super) fn new(
        options: &MrOptions,
        expected: &[String],
        output: Option<(Vec<String>, Option<String>)>,
        first_exit: Option<(String, String)>,
        events: &[MrEvent],
        job_time: Option<Duration>,
    ) -> Verdicts {
        let (lines, digest_at_end) = match output {
            Some((lines, digest)) => (Some(lines), digest),
            None => (None, None),
        };
        let first_worker = events
            .iter()
            .find(|e| {
                e.kind == "worker" && e.phase == "exit" && e.detail.as_deref() == Some("job-done")
            })
            .and_then(|e| e.process.clone());
        let early_exit = check::early_exit(
            first_worker.as_deref(),
            first_exit
                .as_ref()
                .filter(|(worker, _)| Some(worker) == first_worker.as_ref())
                .map(|(_, digest)| digest.as_str()),
            digest_at_end.as_deref(),
        );
        let not_exited = events
            .iter()
            .filter(|e| {
                e.kind == "worker"
                    && e.detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("stopped by control"))
            })
            .filter_map(|e| e.process.clone())
            .collect();
        let faults_applied: Vec<(String, usize)> = options
            .faults
            .iter()
            .map(|fault| {
                let count = events
                    .iter()
                    .filter(|e| {
                        e.kind == "nemesis"
                            && e.phase == "start"
                            && e.fault == Some(*fault)
                            && e.error.is_none()
                    })
                    .count();
                (fault.name().to_string(), count)
            })
            .collect();
        let faults_missing = faults_applied
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(name, _)| name.clone())
            .collect();
        Verdicts {
            output: lines.map(|lines| check::compare_output(expected, &lines)),
            early_exit,
            not_exited,
            faults_applied,
            faults_missing,
            job_time,
        }
    }

    pub(super) fn failed(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if !self.output.as_ref().is_some_and(|o| o.valid) {
            failed.push("output".to_string());
        }
        if !self.early_exit.valid {
            failed.push("early-exit".into());
        }
        if !self.not_exited.is_empty() {
            failed.push("workers-exit".into());
        }
        if !self.faults_missing.is_empty() {
            failed.push("faults-happened".into());
        }
        if self.job_time.is_none() {
            failed.push("job-done".into());
        }
        failed
    }

    fn json(&self) -> Value {
        json!({
            "output": self.output,
            "early_exit": self.early_exit,
            "workers_exit": {
                "valid": self.not_exited.is_empty(),
                "not_exited": self.not_exited,
            },
            "faults_happened": {
                "valid": self.faults_missing.is_empty(),
                "applied": self.faults_applied.iter().map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<String, Value>>(),
                "missing": self.faults_missing,
            },
            "job_done": {
                "valid": self.job_time.is_some(),
                "seconds": self.job_time.map(|t| t.as_secs_f64()),
            },
        })
    }
}

pub(super) fn write_outputs(
    run_dir: &RunDir,
    options: &MrOptions,
    samples: &[Sample],
    events: &[MrEvent],
    verdicts: &Verdicts,
    errors: &[String],
) -> Result<(), MrError> {
    let progress_path = run_dir.path.join("progress.jsonl");
    let progress: String = samples
        .iter()
        .filter_map(|s| serde_json::to_string(s).ok())
        .map(|l| l + "\n")
        .collect();
    if let Err(e) = fs::write(&progress_path, progress) {
        eprintln!("control: writing {}: {e}", progress_path.display());
    }
    let failed = verdicts.failed();
    let valid = failed.is_empty() && errors.is_empty();
    let nemesis: Vec<&MrEvent> = events.iter().filter(|e| e.kind == "nemesis").collect();
    let info = json!({
        "test": options.name,
        "app": options.app,
        "nodes": options.nodes,
        "replicas": options.replicas,
        "workers": options.workers,
        "input_files": options.input_files,
        "input_bytes_per_file": options.input_bytes_per_file,
        "n_reduce": options.n_reduce,
        "task_timeout_ms": millis(options.task_timeout),
        "task_delay_ms": millis(options.task_delay),
        "faults": options.faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "fault_interval_ms": millis(options.fault_interval),
        "fault_duration_ms": millis(options.fault_duration),
        "seed": options.seed,
    });
    let results = json!({
        "valid": valid,
        "failed_checks": failed,
        "checks": verdicts.json(),
        "run": info,
        "job_seconds": verdicts.job_time.map(|t| t.as_secs_f64()),
        "workers_started": events.iter().filter(|e| e.kind == "worker" && e.phase == "start").count(),
        "leader_elections": events.iter().filter(|e| e.kind == "leader").count(),
        "nemesis": nemesis,
        "errors": errors,
    });
    run_dir.write_results(&results)?;
    let html = report::render(&report::ReportInput {
        title: &options.name,
        results: &results,
        samples,
        events,
    });
    let path = run_dir.path.join("report.html");
    fs::write(&path, html)
        .map_err(|e| MrError::Setup(format!("writing {}: {e}", path.display())))?;
    Ok(())
}
