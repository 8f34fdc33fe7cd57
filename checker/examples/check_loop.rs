//! Checks one corpus file N times (for instruction counts under callgrind):
//! `check_loop <path> <etcd|kv|kv-nopartition> <N>`.

use std::path::Path;

use checker::history::{read_file, Format};
use checker::{check_history, ModelKind, Options};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: check_loop <path> <etcd|kv|kv-nopartition> <N>");
        std::process::exit(2);
    }
    let (format, model) = match args[2].as_str() {
        "etcd" => (Format::PorcupineEtcd, ModelKind::Etcd),
        "kv" => (Format::PorcupineKv, ModelKind::Kv),
        _ => (Format::PorcupineKv, ModelKind::KvUnpartitioned),
    };
    let n: usize = args[3].parse().unwrap_or(1);
    let history = match read_file(Path::new(&args[1]), format) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    // As checker-bench times the corpus.
    let options = Options {
        timeout: Some(std::time::Duration::from_secs(60)),
        ..Options::default()
    };
    for _ in 0..n {
        match check_history(&history, &model, &options) {
            Ok(r) => std::hint::black_box(r),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
    }
}
