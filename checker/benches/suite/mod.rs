//! The checker benchmark, shared by `checker-bench` (the full run behind
//! `make bench-checker`) and `cargo bench -p checker` (a quicker run).
//!
//! It prints the setup first (cores, CPU, build profile, load), then:
//! * every file of the reference corpus (`shared/corpus`, located from
//!   `CARGO_MANIFEST_DIR/../../shared` unless given) with operations,
//!   expected and found verdict, our best check time beside porcupine's from
//!   `porcupine/TIMINGS.md`, and the speed-up;
//! * generated histories (64 clients, 1,000 keys) of the requested sizes,
//!   each in a child process so its peak memory (VmHWM) is its own.
//!
//! Times exclude parsing (porcupine's exclude it too); parse times are shown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use checker::generate::{generate, Anomaly, GenerateConfig, GeneratedModel};
use checker::history::{read_file, Format};
use checker::{check_history, graph, History, ModelKind, Options, Value, Verdict};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The corpus root (holding `porcupine/` and `knossos/`).
    pub corpus: PathBuf,
    /// Generated history sizes (operations).
    pub sizes: Vec<usize>,
    /// Least time spent re-checking one corpus file, to get a stable minimum.
    pub repeat_for: Duration,
    /// Also run 1M-operation register, cas-register and anomaly histories.
    pub extra_generated: bool,
}

/// The corpus beside the workspace.
pub fn default_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// CPU time (user + system) this process used so far, in seconds, from
/// /proc/self/stat (clock ticks of 1/100 s). On a shared, loaded machine
/// this is a fairer measure than wall-clock time.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Peak resident memory of this process (VmHWM), in KiB.
pub fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn print_setup() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug (unoptimised!)"
    } else {
        "release"
    };
    println!("## Setup\n");
    println!("| item | value |\n| --- | --- |");
    println!("| cores | {cores} (checker threads: all) |");
    println!("| CPU | {} |", cpu_model());
    println!("| build profile | {profile} |");
    println!(
        "| load average at start | {} |",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| porcupine's numbers | porcupine/TIMINGS.md (upstream Benchmark*, min of 3, same kind of 2-core box, noisy) |");
    println!();
}

/// Porcupine's per-check seconds: (file, model column) → seconds.
fn porcupine_timings(corpus: &Path) -> HashMap<(String, String), f64> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(corpus.join("porcupine/TIMINGS.md")) else {
        return out;
    };
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", file, model, ops, expected, porcupine, bench min, bench median, first, min, median, parse, verbose, ""]
        if cells.len() < 11 || !(cells[1].starts_with("jepsen/") || cells[1].starts_with("kv/")) {
            continue;
        }
        let seconds = cells[6].parse::<f64>().or_else(|_| cells[9].parse::<f64>());
        if let Ok(s) = seconds {
            out.insert((cells[1].to_string(), cells[2].to_string()), s);
        }
    }
    out
}

fn manifest(path: &Path) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| anyhow!("{}: empty manifest", path.display()))?
        .split('\t')
        .map(String::from)
        .collect();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split('\t').map(String::from))
                .collect()
        })
        .collect())
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Linearizable => "ok",
        Verdict::NotLinearizable => "illegal",
        Verdict::Unknown => "unknown",
    }
}

/// Checks `history` repeatedly for at least `repeat_for` (and at least 3
/// times, at most 10,000); returns the verdict, the minimum wall time and
/// the mean CPU time per check.
fn time_check(
    history: &History,
    model: &ModelKind,
    repeat_for: Duration,
) -> anyhow::Result<(Verdict, Duration, f64)> {
    let options = Options {
        timeout: Some(Duration::from_secs(60)),
        ..Options::default()
    };
    let started = Instant::now();
    let cpu_started = process_cpu_seconds().unwrap_or(0.0);
    let mut best = Duration::MAX;
    let mut verdict = Verdict::Unknown;
    let mut runs = 0;
    while runs < 3 || (started.elapsed() < repeat_for && runs < 10_000) {
        let t = Instant::now();
        let result = check_history(history, model, &options).map_err(|e| anyhow!("{e}"))?;
        best = best.min(t.elapsed());
        verdict = result.verdict;
        runs += 1;
    }
    let cpu = (process_cpu_seconds().unwrap_or(0.0) - cpu_started) / f64::from(runs);
    Ok((verdict, best, cpu))
}

struct Row {
    file: String,
    model: String,
    operations: usize,
    expected: String,
    found: Verdict,
    parse: Duration,
    ours: Duration,
    cpu: f64,
    porcupine: Option<f64>,
}

fn corpus_rows(config: &BenchConfig) -> anyhow::Result<Vec<Row>> {
    let timings = porcupine_timings(&config.corpus);
    let mut rows = Vec::new();
    let porcupine = config.corpus.join("porcupine");
    for m in manifest(&porcupine.join("manifest.tsv"))? {
        let file = m.get("path").cloned().unwrap_or_default();
        let mut runs: Vec<(&str, ModelKind, Format)> = Vec::new();
        match m.get("model").map(String::as_str) {
            Some("etcd-cas-register") => {
                runs.push(("etcd", ModelKind::Etcd, Format::PorcupineEtcd))
            }
            Some("kv-get-put-append") => {
                runs.push(("kv", ModelKind::Kv, Format::PorcupineKv));
                if timings.contains_key(&(file.clone(), "kv-nopartition".to_string())) {
                    runs.push((
                        "kv-nopartition",
                        ModelKind::KvUnpartitioned,
                        Format::PorcupineKv,
                    ));
                }
            }
            other => bail!("{file}: unknown model {other:?}"),
        }
        for (column, model, format) in runs {
            let path = porcupine.join(&file);
            let t = Instant::now();
            let history = read_file(&path, format).map_err(|e| anyhow!("{e}"))?;
            let parse = t.elapsed();
            let (found, ours, cpu) = time_check(&history, &model, config.repeat_for)?;
            rows.push(Row {
                file: format!("porcupine/{file}"),
                model: column.to_string(),
                operations: history.len(),
                expected: m.get("expected").cloned().unwrap_or_default(),
                found,
                parse,
                ours,
                cpu,
                porcupine: timings.get(&(file.clone(), column.to_string())).copied(),
            });
        }
    }
    let knossos = config.corpus.join("knossos");
    for m in manifest(&knossos.join("manifest.tsv"))? {
        let file = m.get("path").cloned().unwrap_or_default();
        let initial = m.get("initial").cloned().unwrap_or_default();
        let value = checker::formats::edn::read_all(&initial, Path::new("initial"))
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .next()
            .unwrap_or(Value::Nil);
        let model = match m.get("model").map(String::as_str) {
            Some("cas-register") => ModelKind::CasRegister { initial: value },
            Some("multi-register") => ModelKind::MultiRegister { initial: value },
            Some("mutex") => ModelKind::Mutex,
            other => bail!("{file}: unknown model {other:?}"),
        };
        let path = knossos.join(&file);
        let t = Instant::now();
        let history = read_file(&path, Format::Edn).map_err(|e| anyhow!("{e}"))?;
        let parse = t.elapsed();
        let (found, ours, cpu) = time_check(&history, &model, config.repeat_for)?;
        rows.push(Row {
            file: format!("knossos/{file}"),
            model: model.name().to_string(),
            operations: history.len(),
            expected: m.get("expected").cloned().unwrap_or_default(),
            found,
            parse,
            ours,
            cpu,
            porcupine: None,
        });
    }
    Ok(rows)
}

fn seconds(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

fn print_corpus(rows: &[Row]) {
    println!("## Reference corpus\n");
    println!("Ours: minimum wall time over repeated checks (parse excluded), and mean CPU time per check over the same runs (process user+system, 10 ms ticks, so approximate for tiny files). Porcupine: TIMINGS.md \"bench s/check (min of 3)\". Speed-up = porcupine / our minimum wall time.\n");
    println!("| file | model | ops | expected | ours | parse s | ours s (min wall) | ours CPU s/check | porcupine s | speed-up | ≥10× |");
    println!("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let (mut compared, mut fast_enough, mut wrong) = (0, 0, 0);
    let (mut ours_total, mut theirs_total) = (0.0, 0.0);
    let mut worst: Option<(f64, &str, &str)> = None;
    for r in rows {
        let found = verdict_word(r.found);
        let right = match r.expected.as_str() {
            "ok" | "untested" => r.found == Verdict::Linearizable,
            "illegal" => r.found == Verdict::NotLinearizable,
            _ => false,
        };
        if !right {
            wrong += 1;
        }
        let (theirs, ratio, flag) = match r.porcupine {
            Some(p) => {
                let ratio = p / r.ours.as_secs_f64().max(1e-9);
                compared += 1;
                ours_total += r.ours.as_secs_f64();
                theirs_total += p;
                if ratio >= 10.0 {
                    fast_enough += 1;
                }
                if worst.is_none_or(|(w, _, _)| ratio < w) {
                    worst = Some((ratio, &r.file, &r.model));
                }
                (
                    format!("{p:.6}"),
                    format!("{ratio:.1}×"),
                    if ratio >= 10.0 { "yes" } else { "**no**" },
                )
            }
            None => ("-".into(), "-".into(), "-"),
        };
        println!(
            "| {} | {} | {} | {} | {}{} | {:.6} | {} | {:.6} | {} | {} | {} |",
            r.file,
            r.model,
            r.operations,
            r.expected,
            found,
            if right { "" } else { " **WRONG**" },
            r.parse.as_secs_f64(),
            seconds(r.ours),
            r.cpu,
            theirs,
            ratio,
            flag
        );
    }
    println!();
    println!(
        "Corpus summary: {} checks, {} verdicts wrong.",
        rows.len(),
        wrong
    );
    println!(
        "Against porcupine: {fast_enough} of {compared} checks at least 10× faster; sum of times ours {ours_total:.4} s vs porcupine {theirs_total:.4} s ({:.1}×).",
        theirs_total / ours_total.max(1e-9)
    );
    if let Some((ratio, file, model)) = worst {
        println!("Smallest speed-up: {ratio:.1}× on {file} ({model}).");
    }
    println!();
}

/// One generated run (done in a child process by the parent).
#[derive(Debug, Clone)]
pub struct GeneratedRun {
    pub model: GeneratedModel,
    pub operations: usize,
    pub anomaly: Option<Anomaly>,
    pub seed: u64,
}

/// The measurement a child prints on one line.
fn generated_line(run: &GeneratedRun) -> anyhow::Result<String> {
    let mut config = GenerateConfig::new(run.model, 64, 1_000, run.operations, run.seed);
    config.anomaly = run.anomaly;
    let t = Instant::now();
    let generated = generate(&config);
    let generate_time = t.elapsed();
    let after_generate = peak_memory_kib().unwrap_or(0);
    let t = Instant::now();
    let cpu_before = process_cpu_seconds().unwrap_or(0.0);
    let result = check_history(
        &generated.history,
        &run.model.model_kind(),
        &Options::default(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let check_time = t.elapsed();
    let check_cpu = process_cpu_seconds().unwrap_or(0.0) - cpu_before;
    let after_check = peak_memory_kib().unwrap_or(0);
    let t = Instant::now();
    let graph_verdict = match graph::check(&generated.history, &run.model.model_kind()) {
        graph::GraphVerdict::Violation(_) => "violation",
        graph::GraphVerdict::NoViolationFound => "none",
        graph::GraphVerdict::NotApplicable(_) => "n/a",
    };
    let graph_time = t.elapsed();
    Ok(format!(
        "RESULT verdict={} generate_s={:.3} check_s={:.3} check_cpu_s={:.2} graph_s={:.3} graph={} hwm_generate_kib={} hwm_kib={} cache_entries={} memory_bytes={} partitions={}",
        verdict_word(result.verdict),
        generate_time.as_secs_f64(),
        check_time.as_secs_f64(),
        check_cpu,
        graph_time.as_secs_f64(),
        graph_verdict,
        after_generate,
        after_check.max(peak_memory_kib().unwrap_or(0)),
        result.cache_entries,
        result.memory_bytes,
        result.partitions
    ))
}

/// Entry point of a child: measure one generated run and print its line.
pub fn run_child(run: &GeneratedRun) -> anyhow::Result<()> {
    println!("{}", generated_line(run)?);
    Ok(())
}

fn model_name(model: GeneratedModel) -> &'static str {
    model.name()
}

/// Runs one generated measurement, in a child process when `child` is the
/// command that re-enters [`run_child`]; else in this process.
fn measure(
    run: &GeneratedRun,
    child: Option<&dyn Fn(&GeneratedRun) -> Command>,
) -> anyhow::Result<HashMap<String, String>> {
    let line = match child {
        Some(make) => {
            let output = make(run).output().context("starting the child process")?;
            if !output.status.success() {
                bail!(
                    "child failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .find(|l| l.starts_with("RESULT "))
                .map(String::from)
                .ok_or_else(|| anyhow!("child printed no RESULT line"))?
        }
        None => generated_line(run)?,
    };
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

fn print_generated(
    config: &BenchConfig,
    child: Option<&dyn Fn(&GeneratedRun) -> Command>,
) -> anyhow::Result<()> {
    println!("## Generated histories (64 clients, 1,000 keys, 1% info ops)\n");
    println!(
        "{}\n",
        if child.is_some() {
            "Each row ran in its own process; peak memory is that process's VmHWM (history + check)."
        } else {
            "All rows ran in this process; VmHWM is the process's peak so far (monotone)."
        }
    );
    println!("| model | ops | anomaly | seed | verdict | expected | generate s | check s (wall) | check CPU s | graph pre-pass s | peak MiB | cache entries |");
    println!("| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut runs: Vec<GeneratedRun> = config
        .sizes
        .iter()
        .map(|&operations| GeneratedRun {
            model: GeneratedModel::Kv,
            operations,
            anomaly: None,
            seed: 1,
        })
        .collect();
    if config.extra_generated {
        let largest = config.sizes.iter().copied().max().unwrap_or(1_000_000);
        for model in [GeneratedModel::Register, GeneratedModel::CasRegister] {
            runs.push(GeneratedRun {
                model,
                operations: largest,
                anomaly: None,
                seed: 2,
            });
        }
        for anomaly in [Anomaly::StaleRead, Anomaly::LostWrite] {
            runs.push(GeneratedRun {
                model: GeneratedModel::Kv,
                operations: largest,
                anomaly: Some(anomaly),
                seed: 3,
            });
        }
    }
    for run in &runs {
        eprintln!(
            "generated: {} {} ops {:?} SEED={}",
            model_name(run.model),
            run.operations,
            run.anomaly,
            run.seed
        );
        let m = measure(run, child)?;
        let get = |k: &str| m.get(k).cloned().unwrap_or_else(|| "?".into());
        let mib = get("hwm_kib")
            .parse::<f64>()
            .map_or("?".into(), |k| format!("{:.0}", k / 1024.0));
        let expected = if run.anomaly.is_some() {
            "illegal"
        } else {
            "ok"
        };
        println!(
            "| {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            model_name(run.model),
            run.operations,
            run.anomaly.map_or("-".to_string(), |a| format!("{a:?}")),
            run.seed,
            get("verdict"),
            if get("verdict") == expected {
                ""
            } else {
                " **WRONG**"
            },
            expected,
            get("generate_s"),
            get("check_s"),
            get("check_cpu_s"),
            get("graph_s"),
            get("graph"),
            mib,
            get("cache_entries")
        );
    }
    println!();
    println!("Goal: 1M operations checked in < 10 s and < 2 GB on 2 cores.");
    Ok(())
}

/// The whole benchmark. `child` builds the command that measures one
/// generated run in a fresh process (None: measure in-process).
pub fn run(
    config: &BenchConfig,
    child: Option<&dyn Fn(&GeneratedRun) -> Command>,
) -> anyhow::Result<()> {
    print_setup();
    eprintln!("corpus: {}", config.corpus.display());
    let rows = corpus_rows(config)?;
    print_corpus(&rows);
    print_generated(config, child)?;
    Ok(())
}
