//! The committed corpora (`fuzz/corpus/<target>/`), replayed through their targets on the
//! stable toolchain, so every input the fuzzer ever kept (the crashes it found included)
//! runs in `cargo test --workspace`; and the seeds, which must still go as far as they did
//! (a parser that starts refusing everything fails here, not silently in a fuzzing run).
//!
//! `cargo test -p strongroom-fuzz --test corpus -- --ignored write_seeds` regenerates the
//! seed files (named by SHA-1, as libFuzzer names its own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};
use strongroom_fuzz::seeds::{self, Seed};
use strongroom_fuzz::{Verdict, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus(target: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target)
}

fn name(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_file_replays_without_a_panic_and_each_target_accepts_some() {
    for (target, run) in TARGETS {
        let dir = corpus(target);
        let files = files(&dir);
        assert!(!files.is_empty(), "{} is empty", dir.display());
        let mut accepted = 0;
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            // A panic here names the file through the test's output.
            eprintln!("{target}: {}", f.display());
            if run(&bytes) == Verdict::Accepted {
                accepted += 1;
            }
        }
        assert!(accepted > 0, "{target}: none of {} corpus files is accepted", files.len());
    }
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus_and_nothing_else_does() {
    let names: BTreeSet<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let in_dir = |dir: &str, ext: &str| -> BTreeSet<String> {
        std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|n| n.strip_suffix(ext).map(str::to_owned))
            .collect()
    };
    let want: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(in_dir("fuzz_targets", ".rs"), want, "fuzz/fuzz_targets/*.rs");
    assert_eq!(in_dir("corpus", ""), want, "fuzz/corpus/*");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for n in &names {
        assert!(manifest.contains(&format!("name = \"{n}\"")), "fuzz/Cargo.toml lacks [[bin]] {n}");
    }
}

fn seeds() -> Vec<Seed> {
    let all = seeds::all().unwrap();
    for (target, _) in TARGETS {
        assert!(all.iter().any(|s| s.target == *target), "no seed for {target}");
    }
    all
}

#[test]
fn the_seeds_still_go_as_far_as_they_did_and_are_committed() {
    for s in seeds() {
        let (_, run) = TARGETS.iter().find(|(n, _)| *n == s.target).unwrap();
        assert_eq!(run(&s.bytes), s.expect, "{} seed {:?}", s.target, s.what);
        let file = corpus(s.target).join(name(&s.bytes));
        assert!(
            file.is_file(),
            "{} seed {:?} is not committed as {}: regenerate with `cargo test -p strongroom-fuzz \
             --test corpus -- --ignored write_seeds`",
            s.target,
            s.what,
            file.display()
        );
    }
}

#[test]
fn the_seeds_are_deterministic() {
    let names = |v: Vec<Seed>| v.into_iter().map(|s| name(&s.bytes)).collect::<Vec<_>>();
    assert_eq!(names(seeds()), names(seeds()));
}

#[test]
#[ignore = "writes the seed files into fuzz/corpus; run by hand after a format changes"]
fn write_seeds() {
    for s in seeds() {
        let dir = corpus(s.target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name(&s.bytes)), &s.bytes).unwrap();
    }
}
