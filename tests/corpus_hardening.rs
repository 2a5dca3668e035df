//! Corpus and evaluation inputs that used to be misread (issue 13): inexact numeric ids,
//! conflicting repeated ids under `--skip-bad`, a BEIR `corpus.jsonl` that is not a file, and
//! evaluations that averaged over no query. Run through the binary with the hashed test
//! embedder, so no model files are needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn engine(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env("ENGINE_TEST_HASH_ENCODER", "32").env_remove("ENGINE_TEST_SLOW_BATCH_MS");
    c.arg("--config").arg(config);
    c
}

fn setup(dir: &Path) -> PathBuf {
    let p = dir.join("test.toml");
    std::fs::write(&p, "[encoder]\nbatch_size = 4\n[index]\nbackend = \"flat\"\n").unwrap();
    p
}

fn index(config: &Path, corpus: &Path, db: &Path, extra: &[&str]) -> Output {
    let mut c = engine(config);
    c.arg("index").arg(corpus).arg("--db").arg(db).args(extra);
    c.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn skip_bad_skips_a_conflicting_repeated_id_and_the_error_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let corpus = dir.path().join("c.jsonl");
    std::fs::write(
        &corpus,
        "{\"_id\":\"a\",\"text\":\"alpha beta\"}\n{\"_id\":\"b\",\"text\":\"gamma\"}\n\
         {\"_id\":\"a\",\"text\":\"alpha changed\"}\n",
    )
    .unwrap();
    let db = dir.path().join("db");
    let out = index(&cfg, &corpus, &db, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("c.jsonl:3"), "{}", stderr(&out));

    let out = index(&cfg, &corpus, &db, &["--skip-bad"]);
    let v = ok_json(&out);
    assert_eq!(v["bad_lines_skipped"], 1);
    assert_eq!(v["report"]["added"], 2);
    let stored = engine::store::Database::open(&db, None).unwrap();
    assert_eq!(stored.get_document("a").unwrap().unwrap().text, "alpha beta");

    // --update keeps the last record, as before.
    let db2 = dir.path().join("db2");
    let v = ok_json(&index(&cfg, &corpus, &db2, &["--update"]));
    assert_eq!(v["report"]["added"], 2);
    let stored = engine::store::Database::open(&db2, None).unwrap();
    assert_eq!(stored.get_document("a").unwrap().unwrap().text, "alpha changed");
}

#[test]
fn inexact_numeric_and_blank_ids_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let corpus = dir.path().join("c.jsonl");
    let db = dir.path().join("db");
    for (id, want) in [
        ("1.50", "JSON string"),
        ("123456789012345678901234567890", "JSON string"),
        ("\" \"", "blank"),
    ] {
        std::fs::write(
            &corpus,
            format!("{{\"_id\":7,\"text\":\"x\"}}\n{{\"_id\":{id},\"text\":\"y\"}}\n"),
        )
        .unwrap();
        let out = index(&cfg, &corpus, &db, &[]);
        assert!(!out.status.success(), "{id} accepted");
        let err = stderr(&out);
        assert!(err.contains("c.jsonl:2") && err.contains(want), "{id}: {err}");
    }
    std::fs::write(&corpus, "{\"_id\":18446744073709551615,\"text\":\"x\"}\n").unwrap();
    ok_json(&index(&cfg, &corpus, &db, &[]));
    let stored = engine::store::Database::open(&db, None).unwrap();
    assert!(stored.get_document("18446744073709551615").unwrap().is_some());
}

#[test]
fn a_beir_corpus_that_is_a_directory_is_not_read_as_text_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let beir = dir.path().join("beir");
    std::fs::create_dir_all(beir.join("corpus.jsonl")).unwrap();
    std::fs::write(beir.join("notes.txt"), "some notes").unwrap();
    let out = index(&cfg, &beir, &dir.path().join("db"), &["--skip-bad"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("corpus.jsonl") && err.contains("not a regular file"), "{err}");
}

/// A BEIR folder whose qrels judge only queries that queries.jsonl lacks.
fn disjoint_dataset(d: &Path) {
    std::fs::create_dir_all(d.join("qrels")).unwrap();
    std::fs::write(d.join("corpus.jsonl"), "{\"_id\":\"d1\",\"text\":\"cats purr\"}\n").unwrap();
    std::fs::write(d.join("queries.jsonl"), "\u{feff}{\"_id\":\"1\",\"text\":\"cat\"}\n").unwrap();
    std::fs::write(d.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\n2\td1\t1\n").unwrap();
}

#[test]
fn eval_with_no_evaluable_query_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let data = dir.path().join("data");
    disjoint_dataset(&data);
    let mut c = engine(&cfg);
    c.args(["eval", "--mode", "bm25", "--db"])
        .arg(dir.path().join("db"))
        .arg("--dataset")
        .arg(&data);
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr(&out).contains("nothing to evaluate"), "{}", stderr(&out));

    // Header-less qrels, overlapping ids, a byte order mark on queries.jsonl: evaluated.
    std::fs::write(data.join("qrels/test.tsv"), "1\td1\t1\n").unwrap();
    let mut c = engine(&cfg);
    c.args(["eval", "--mode", "bm25", "--db"])
        .arg(dir.path().join("db2"))
        .arg("--dataset")
        .arg(&data);
    let v = ok_json(&c.output().unwrap());
    assert_eq!(v["queries"], 1);
    assert_eq!(v["mrr@10"], 1.0);
}
