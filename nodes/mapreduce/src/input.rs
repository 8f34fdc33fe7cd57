//! Seeded generation of input text (no downloaded books): words drawn from
//! a Zipf-like vocabulary, so word counts have a long tail like real prose.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "qua", "ze", "in", "or", "el",
];

/// A word from the vocabulary by its rank (deterministic).
fn word(rank: usize) -> String {
    let mut n = rank + 1;
    let mut out = String::new();
    while n > 0 {
        out.push_str(SYLLABLES[n % SYLLABLES.len()]);
        n /= SYLLABLES.len();
    }
    out
}

/// Writes `files` files of about `bytes_per_file` bytes each into `dir`
/// (`pg-<i>.txt`) and returns their names. Same seed, same files.
pub fn generate(
    dir: &Path,
    seed: u64,
    files: usize,
    bytes_per_file: usize,
) -> std::io::Result<Vec<String>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vocabulary: Vec<String> = (0..20_000).map(word).collect();
    let mut names = Vec::with_capacity(files);
    for i in 0..files {
        let name = format!("pg-{i}.txt");
        let path: PathBuf = dir.join(&name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut written = 0usize;
        let mut line = 0usize;
        while written < bytes_per_file {
            // Zipf-ish: rank = floor(N^u) for uniform u, heavy on small ranks.
            let u: f64 = rng.gen();
            let rank = ((vocabulary.len() as f64).powf(u) as usize).saturating_sub(1);
            let w = &vocabulary[rank.min(vocabulary.len() - 1)];
            let sep = match rng.gen_range(0..20) {
                0 => ", ",
                1 => ". ",
                _ => " ",
            };
            line += w.len() + sep.len();
            if line > 70 {
                out.write_all(b"\n")?;
                written += 1;
                line = 0;
            }
            out.write_all(w.as_bytes())?;
            out.write_all(sep.as_bytes())?;
            written += w.len() + sep.len();
        }
        out.write_all(b"\n")?;
        out.flush()?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_text_different_seed_different_text() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let c = dir.path().join("c");
        for (d, seed) in [(&a, 1), (&b, 1), (&c, 2)] {
            std::fs::create_dir(d).unwrap();
            generate(d, seed, 1, 2000).unwrap();
        }
        let read = |d: &Path| std::fs::read_to_string(d.join("pg-0.txt")).unwrap();
        assert_eq!(read(&a), read(&b));
        assert_ne!(read(&a), read(&c));
        assert!(read(&a).len() >= 2000);
    }
}
