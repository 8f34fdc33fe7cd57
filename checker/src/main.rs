//! The `checker` CLI: `checker check [--model M] [--format F] FILE`.
//!
//! Exit status: 0 linearizable, 1 not linearizable, 2 bad usage or bad input
//! (the message names the file and line), 3 unknown (a budget ran out).
//! Progress goes to stderr, results to stdout; `--json` prints one object.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use checker::history::{read_file, Format};
use checker::model::ModelKind;
use checker::{check_history, GraphMode, Options, Value, Verdict};

/// Exit status for bad usage or bad input (clap uses 2 for usage errors too).
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "checker",
    version,
    about = "Linearizability checker (porcupine-style search)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a history for linearizability.
    ///
    /// Exit status: 0 linearizable, 1 not linearizable, 2 bad usage or input, 3 unknown.
    Check(CheckArgs),
    /// Convert a history to our JSON lines or to Jepsen EDN (on stdout).
    Convert(ConvertArgs),
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// The model: kv, kv-unpartitioned, register, cas-register, etcd,
    /// multi-register, mutex. Default: from the format and the operations.
    #[arg(long)]
    model: Option<String>,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Time budget in seconds; when it runs out the verdict is unknown (exit 3).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Memory budget for the search caches, in MiB; exceeding it gives unknown.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    max_memory_mib: usize,
    /// Initial value of the register(s) as JSON or EDN (default null; Jepsen's
    /// `(cas-register 0)` histories need `--initial 0`; multi-register takes a map).
    #[arg(long, value_name = "VALUE")]
    initial: Option<String>,
    /// Worker threads for partitions (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Search every partition to the end even after one is not linearizable,
    /// to explain every failing key (by default the others are cancelled).
    #[arg(long)]
    all_keys: bool,
    /// The graph pre-pass (kv, register, cas-register with unique written
    /// values): `auto` asks it when a key's search runs long and to explain a
    /// violation, `first` before every search, `off` never. It only proves
    /// violations; the search decides "linearizable".
    #[arg(long, value_enum, default_value_t = GraphArg::Auto)]
    graph: GraphArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML explanation to this file.
    #[arg(long, value_name = "REPORT")]
    html: Option<PathBuf>,
    /// The history file.
    file: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ConvertArgs {
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Output format.
    #[arg(long, value_enum)]
    to: OutputArg,
    /// The history file.
    file: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Auto,
    Jsonl,
    Edn,
    PorcupineKv,
    PorcupineEtcd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GraphArg {
    Off,
    Auto,
    First,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputArg {
    Jsonl,
    Edn,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Auto => Format::Auto,
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Edn => Format::Edn,
            FormatArg::PorcupineKv => Format::PorcupineKv,
            FormatArg::PorcupineEtcd => Format::PorcupineEtcd,
        }
    }
}

/// Parses `--initial`: JSON first, then EDN, else the bare word as a string.
fn parse_initial(text: &str) -> anyhow::Result<Value> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        return Ok(Value::from_json(&json));
    }
    let forms = checker::formats::edn::read_all(text, "--initial".as_ref())
        .with_context(|| format!("--initial {text:?} is neither JSON nor EDN"))?;
    match forms.as_slice() {
        [one] => Ok(one.clone()),
        _ => anyhow::bail!("--initial {text:?} must be one value"),
    }
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut format: Format = args.format.into();
    if format == Format::Auto {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("{}: cannot read", args.file.display()))?;
        format = checker::formats::detect(&text).unwrap_or(Format::Auto);
    }
    let history = read_file(&args.file, format)?;
    let initial = args.initial.as_deref().map(parse_initial).transpose()?;
    let model = match &args.model {
        Some(name) => ModelKind::from_name(name, initial).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown model {name:?}; known: {}",
                ModelKind::NAMES.join(", ")
            )
        })?,
        None => {
            let inferred = ModelKind::infer(&history, format);
            match initial {
                Some(v) => ModelKind::from_name(inferred.name(), Some(v)).unwrap_or(inferred),
                None => inferred,
            }
        }
    };
    let options = Options {
        timeout: args.timeout.map(Duration::from_secs_f64),
        max_memory_bytes: args.max_memory_mib.saturating_mul(1 << 20),
        threads: args.threads,
        stop_on_first_violation: !args.all_keys,
        graph: match args.graph {
            GraphArg::Off => GraphMode::Off,
            GraphArg::Auto => GraphMode::Auto,
            GraphArg::First => GraphMode::First,
        },
    };
    eprintln!(
        "checking {} ({} operations, format {}, model {})",
        args.file.display(),
        history.len(),
        format.as_str(),
        model.name()
    );
    let mut result = check_history(&history, &model, &options)
        .map_err(|e| anyhow::anyhow!("{}:{}", args.file.display(), e))?;
    if options.graph != GraphMode::Off {
        checker::explain(&history, &model, &mut result);
    }
    if let Some(path) = &args.html {
        checker::html::write_report(path, &history, &result)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        let mut object = checker::report::to_json(&history, &result);
        object["file"] = serde_json::Value::String(args.file.display().to_string());
        println!("{object}");
    } else {
        print!(
            "{}",
            checker::report::summary(&history, &result, &checker::model::describe_operation)
        );
    }
    Ok(ExitCode::from(match result.verdict {
        Verdict::Linearizable => 0,
        Verdict::NotLinearizable => 1,
        Verdict::Unknown => 3,
    }))
}

fn run_convert(args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let history = read_file(&args.file, args.format.into())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.to {
        OutputArg::Jsonl => checker::formats::jsonl::write_history(&history, &mut out)?,
        OutputArg::Edn => checker::formats::edn::write_history(&history, &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Check(args) => run_check(args),
        Command::Convert(args) => run_convert(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("checker: {error:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
