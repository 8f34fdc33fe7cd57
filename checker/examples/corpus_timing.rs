//! Prints check times for every reference corpus file (release build:
//! `cargo run --release -p checker --example corpus_timing`). Parsing is
//! excluded; each file is checked 7 times and the first, min and median shown.

use std::path::Path;
use std::time::{Duration, Instant};

use checker::history::{read_file, Format};
use checker::{check_history, ModelKind, Options, Value};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let filter = std::env::args().nth(1).unwrap_or_default();
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    println!(
        "setup: {} cores available, threads={threads} (0 = all), 7 runs per file, parse excluded",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut rows: Vec<(String, ModelKind)> = Vec::new();
    for folder in ["porcupine", "knossos"] {
        let Ok(text) = std::fs::read_to_string(root.join(folder).join("manifest.tsv")) else {
            eprintln!("no corpus at {}", root.display());
            return;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let path = format!("{folder}/{}", cols[0]);
            let (model_col, initial_col) = if folder == "porcupine" {
                (cols[2], "")
            } else {
                (cols[1], cols[2])
            };
            let model = match (folder, model_col) {
                ("porcupine", "etcd-cas-register") => ModelKind::Etcd,
                ("porcupine", _) => ModelKind::Kv,
                (_, "multi-register") => ModelKind::MultiRegister {
                    initial: checker::formats::edn::read_all(initial_col, "i".as_ref())
                        .ok()
                        .and_then(|f| f.into_iter().next())
                        .unwrap_or(Value::Nil),
                },
                (_, "mutex") => ModelKind::Mutex,
                _ => ModelKind::CasRegister {
                    initial: if initial_col == "nil" {
                        Value::Nil
                    } else {
                        Value::Int(0)
                    },
                },
            };
            rows.push((path.clone(), model.clone()));
            if folder == "porcupine" && cols[2] != "etcd-cas-register" && !cols[0].contains("c50") {
                rows.push((path, ModelKind::KvUnpartitioned));
            }
        }
    }
    let options = Options {
        threads,
        ..Options::default()
    };
    let mut total_min = Duration::ZERO;
    for (path, model) in rows {
        if !path.contains(&filter) {
            continue;
        }
        let history = match read_file(&root.join(&path), Format::Auto) {
            Ok(h) => h,
            Err(e) => {
                println!("{path}: {e}");
                continue;
            }
        };
        let mut times = Vec::new();
        let mut verdict = None;
        for _ in 0..7 {
            let t = Instant::now();
            let Ok(r) = check_history(&history, &model, &options) else {
                break;
            };
            times.push(t.elapsed());
            verdict = Some(r.verdict);
        }
        let first = times[0];
        times.sort();
        total_min += times[0];
        println!(
            "{path}\t{}\t{}\t{:?}\tfirst {:.6}\tmin {:.6}\tmedian {:.6}",
            model.name(),
            history.len(),
            verdict,
            first.as_secs_f64(),
            times[0].as_secs_f64(),
            times[3].as_secs_f64()
        );
    }
    println!("total of minima: {:.4} s", total_min.as_secs_f64());
}
