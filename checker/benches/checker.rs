//! `cargo bench -p checker`: the checker benchmark's quick form (corpus and
//! 10k/100k generated operations, in-process). The full run with 1M
//! operations and per-run peak memory is `make bench-checker`
//! (`cargo run --release -p checker --bin checker-bench`).

#[allow(dead_code)]
mod suite;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let config = suite::BenchConfig {
        corpus: suite::default_corpus(),
        sizes: vec![10_000, 100_000],
        repeat_for: std::time::Duration::from_millis(100),
        extra_generated: false,
    };
    if let Err(e) = suite::run(&config, None) {
        eprintln!("checker bench: {e:#}");
        std::process::exit(1);
    }
}
