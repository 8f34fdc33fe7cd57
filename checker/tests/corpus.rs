//! The reference corpus: every history in `shared/corpus/*/manifest.tsv`
//! checked with its model and initial value, every verdict asserted.
//!
//! `shared/` sits beside the workspace root (`../shared` from the clone; CI
//! puts a copy there too), i.e. `CARGO_MANIFEST_DIR/../../shared`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use checker::history::{read_file, Format};
use checker::{check_history, ModelKind, Options, Value, Verdict};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .canonicalize()
        .expect("shared/corpus must sit beside the workspace (../shared)")
}

/// Rows of a manifest as (column name -> value) maps.
fn manifest(folder: &str) -> Vec<std::collections::HashMap<String, String>> {
    let path = corpus_dir().join(folder).join("manifest.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split('\t')
        .map(String::from)
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split('\t').map(String::from))
                .collect()
        })
        .collect()
}

fn options() -> Options {
    Options {
        // Far above what any file needs; only here so a regression fails instead of hanging.
        timeout: Some(Duration::from_secs(60)),
        ..Options::default()
    }
}

fn expected(verdict: &str) -> Verdict {
    match verdict {
        "ok" | "untested" => Verdict::Linearizable,
        "illegal" => Verdict::NotLinearizable,
        other => panic!("unknown expected verdict {other}"),
    }
}

fn check(
    path: &Path,
    format: Format,
    model: &ModelKind,
    want: Verdict,
    failures: &mut Vec<String>,
) -> Duration {
    let history = read_file(path, format).unwrap_or_else(|e| panic!("{e}"));
    let result = check_history(&history, model, &options())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if result.verdict != want {
        failures.push(format!(
            "{} with {:?}: got {:?}, expected {:?}",
            path.display(),
            model,
            result.verdict,
            want
        ));
    }
    if want == Verdict::NotLinearizable && result.verdict == want {
        // A violation names at least one operation that cannot be linearized.
        let named = result.violations().any(|p| !p.unlinearizable.is_empty());
        if !named {
            failures.push(format!(
                "{}: violation without an unlinearizable op",
                path.display()
            ));
        }
    }
    result.elapsed
}

#[test]
fn porcupine_corpus_verdicts() {
    let root = corpus_dir().join("porcupine");
    let mut failures = Vec::new();
    let (mut etcd_total, mut kv_total, mut files) = (Duration::ZERO, Duration::ZERO, 0);
    let started = Instant::now();
    for row in manifest("porcupine") {
        let path = root.join(&row["path"]);
        let want = expected(&row["expected"]);
        files += 1;
        match row["model"].as_str() {
            "etcd-cas-register" => {
                assert_eq!(row["format"], "jepsen-etcd-log");
                etcd_total += check(&path, Format::Auto, &ModelKind::Etcd, want, &mut failures);
                // The Knossos reading (failed CAS dropped) must give the same verdicts.
                let knossos = ModelKind::CasRegister {
                    initial: Value::Nil,
                };
                check(&path, Format::PorcupineEtcd, &knossos, want, &mut failures);
            }
            "kv-get-put-append" => {
                assert_eq!(row["format"], "kv-edn-lines");
                kv_total += check(&path, Format::Auto, &ModelKind::Kv, want, &mut failures);
                // Without P-compositionality (as upstream: c01 and c10 only).
                if !row["path"].contains("c50") {
                    check(
                        &path,
                        Format::PorcupineKv,
                        &ModelKind::KvUnpartitioned,
                        want,
                        &mut failures,
                    );
                }
            }
            other => panic!("unknown model {other}"),
        }
    }
    eprintln!(
        "porcupine corpus: {files} files in {:?} (search: etcd {etcd_total:?}, kv {kv_total:?})",
        started.elapsed()
    );
    assert_eq!(files, 109);
    assert!(
        failures.is_empty(),
        "wrong verdicts:\n{}",
        failures.join("\n")
    );
}

fn knossos_model(model: &str, initial: &str) -> ModelKind {
    let value = || {
        let forms = checker::formats::edn::read_all(initial, "initial".as_ref()).unwrap();
        forms.into_iter().next().unwrap()
    };
    match model {
        "cas-register" => ModelKind::CasRegister { initial: value() },
        "multi-register" => ModelKind::MultiRegister { initial: value() },
        "mutex" => ModelKind::Mutex,
        other => panic!("unknown model {other}"),
    }
}

#[test]
fn knossos_corpus_verdicts() {
    let root = corpus_dir().join("knossos");
    let mut failures = Vec::new();
    let mut files = 0;
    let started = Instant::now();
    for row in manifest("knossos") {
        let path = root.join(&row["path"]);
        let want = expected(&row["expected"]);
        files += 1;
        let model = knossos_model(&row["model"], &row["initial"]);
        check(&path, Format::Edn, &model, want, &mut failures);
        // rethink-fail-*: the named tests use (cas-register nil), examples-test
        // uses (cas-register 0); both must be illegal. Check both initials for
        // every cas-register file whose manifest initial is nil.
        if row["model"] == "cas-register" && row["initial"] == "nil" {
            let zero = ModelKind::CasRegister {
                initial: Value::Int(0),
            };
            check(&path, Format::Auto, &zero, want, &mut failures);
        }
    }
    eprintln!("knossos corpus: {files} files in {:?}", started.elapsed());
    assert_eq!(files, 19);
    assert!(
        failures.is_empty(),
        "wrong verdicts:\n{}",
        failures.join("\n")
    );
}

#[test]
fn auto_format_detection_on_the_corpus() {
    let root = corpus_dir();
    let cases = [
        ("porcupine/jepsen/etcd_000.log", ModelKind::Etcd),
        ("porcupine/kv/c01-ok.txt", ModelKind::Kv),
        (
            "knossos/multi-register/good/multi-register.edn",
            ModelKind::MultiRegister {
                initial: Value::Map(vec![]),
            },
        ),
        ("knossos/mutex/bad/etcd.edn", ModelKind::Mutex),
        (
            "knossos/cas-register/bad/cas-failure.edn",
            ModelKind::CasRegister {
                initial: Value::Nil,
            },
        ),
    ];
    for (file, want) in cases {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let format = checker::formats::detect(&text).unwrap();
        let history = read_file(&path, format).unwrap();
        assert_eq!(ModelKind::infer(&history, format), want, "{file}");
    }
}
