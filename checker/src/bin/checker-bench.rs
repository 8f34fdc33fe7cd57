//! `checker-bench`: the checker's speed on the reference corpus and on
//! generated histories (what `make bench-checker` runs). Results on stdout as
//! Markdown tables, progress on stderr.
//!
//! Each generated history is measured in a child process (this binary with
//! `--child`), so the peak memory reported is that history's alone.
//!
//! Exit status: 0 done, 1 a verdict was wrong or the run failed, 2 bad usage.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;

#[path = "../../benches/suite/mod.rs"]
mod suite;

use checker::generate::{Anomaly, GeneratedModel};
use suite::{BenchConfig, GeneratedRun};

#[derive(Parser, Debug)]
#[command(
    name = "checker-bench",
    about = "Checker benchmark: reference corpus and generated histories"
)]
struct Args {
    /// The corpus root (with porcupine/ and knossos/); default: ../../shared/corpus from the crate.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Generated history sizes, in operations.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Least seconds spent re-checking each corpus file (the minimum is reported).
    #[arg(long, default_value_t = 0.2)]
    repeat_secs: f64,
    /// Skip the extra 1M-operation rows (register, cas-register, injected anomalies).
    #[arg(long)]
    quick: bool,
    /// Measure generated histories in this process instead of child processes.
    #[arg(long)]
    in_process: bool,
    /// Internal: measure one generated run and print its RESULT line.
    #[arg(long, hide = true, num_args = 4, value_names = ["MODEL", "OPS", "ANOMALY", "SEED"])]
    child: Option<Vec<String>>,
}

fn parse_child(values: &[String]) -> anyhow::Result<GeneratedRun> {
    let model = match values[0].as_str() {
        "kv" => GeneratedModel::Kv,
        "register" => GeneratedModel::Register,
        "cas-register" => GeneratedModel::CasRegister,
        other => anyhow::bail!("unknown model {other}"),
    };
    let anomaly = match values[2].as_str() {
        "none" => None,
        "stale-read" => Some(Anomaly::StaleRead),
        "lost-write" => Some(Anomaly::LostWrite),
        other => anyhow::bail!("unknown anomaly {other}"),
    };
    Ok(GeneratedRun {
        model,
        operations: values[1].parse()?,
        anomaly,
        seed: values[3].parse()?,
    })
}

fn child_command(run: &GeneratedRun) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("checker-bench"));
    let mut command = Command::new(exe);
    let anomaly = match run.anomaly {
        None => "none",
        Some(Anomaly::StaleRead) => "stale-read",
        Some(Anomaly::LostWrite) => "lost-write",
    };
    command.args([
        "--child",
        run.model.name(),
        &run.operations.to_string(),
        anomaly,
        &run.seed.to_string(),
    ]);
    command
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match &args.child {
        Some(values) => parse_child(values).and_then(|run| suite::run_child(&run)),
        None => {
            let config = BenchConfig {
                corpus: args.corpus.clone().unwrap_or_else(suite::default_corpus),
                sizes: args.sizes.clone(),
                repeat_for: Duration::from_secs_f64(args.repeat_secs.max(0.0)),
                extra_generated: !args.quick,
            };
            let child: &dyn Fn(&GeneratedRun) -> Command = &child_command;
            suite::run(&config, (!args.in_process).then_some(child))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("checker-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
