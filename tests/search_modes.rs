//! `engine search` and `engine eval` in every mode over one database, through the binary, with
//! the test embedder hook (hashed bag of words) so it needs no model files.

use std::path::Path;
use std::process::Command;

fn engine(dir: &Path) -> Command {
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, "[index]\nbackend = \"flat\"\n").unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env("ENGINE_TEST_HASH_ENCODER", "64").arg("--config").arg(cfg);
    c
}

fn json(mut c: Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let docs = [
        (
            "bread",
            "Why bread rises",
            "Yeast ferments sugar and the carbon dioxide gas makes the dough rise.",
        ),
        ("tides", "Ocean tides", "The gravity of the moon pulls the oceans and causes the tides."),
        (
            "index",
            "Inverted index",
            "A search engine maps every word to the list of documents containing it.",
        ),
        (
            "stars",
            "Stars",
            "A star fuses hydrogen into helium in its core until the fuel runs out.",
        ),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"what makes dough rise\"}\n{\"_id\":\"q2\",\"text\":\"moon gravity tides\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\r\nq1\tbread\t1\r\nq2\ttides\t1\r\n",
    )
    .unwrap();
}

/// A temporary folder with the test dataset in `data/`, indexed into `db/`.
fn indexed_dataset() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("db");
    let mut c = engine(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db);
    json(c);
    (dir, data, db)
}

#[test]
fn every_mode_puts_the_obvious_document_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("db");
    let mut c = engine(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db);
    let v = json(c);
    assert_eq!(v["lexical"]["documents"], 4);
    for mode in ["dense", "bm25", "hybrid"] {
        let mut c = engine(dir.path());
        c.args(["search", "--mode", mode, "-k", "2", "--db"]).arg(&db).arg("moon gravity tides");
        let v = json(c);
        assert_eq!(v["hits"][0]["id"], "tides", "{mode}: {v}");
        assert_eq!(v["hits"][0]["title"], "Ocean tides");
        let mut c = engine(dir.path());
        c.args(["eval", "--mode", mode, "--dataset"]).arg(&data).arg("--db").arg(&db);
        let r = json(c);
        assert_eq!(r["queries"], 2, "{mode}: {r}");
        assert_eq!(r["recall@10"], 1.0, "{mode}: {r}");
    }
    // Deleting keeps BM25 in step with the store.
    let mut c = engine(dir.path());
    c.args(["delete", "--db"]).arg(&db).arg("tides");
    json(c);
    let mut c = engine(dir.path());
    c.args(["search", "--mode", "bm25", "--db"]).arg(&db).arg("moon gravity tides");
    let v = json(c);
    assert!(v["hits"].as_array().unwrap().iter().all(|h| h["id"] != "tides"), "{v}");
}

/// `engine eval` opens a database as the server does: BM25 that disagrees with the store (here
/// a stale copy from before a delete, or none at all) is rebuilt from the store, never from the
/// dataset's corpus, so eval scores the documents a user's searches see.
#[test]
fn eval_rebuilds_stale_or_missing_bm25_from_the_store() {
    let (dir, data, db) = indexed_dataset();
    let lexical = engine::store::lexical_dir(&db);
    let stale = dir.path().join("stale-lexical");
    copy_dir(&lexical, &stale);
    let mut c = engine(dir.path());
    c.args(["delete", "--db"]).arg(&db).arg("tides");
    json(c);
    for (mode, bm25) in [("bm25", "stale"), ("hybrid", "stale"), ("bm25", "missing")] {
        std::fs::remove_dir_all(&lexical).unwrap();
        if bm25 == "stale" {
            copy_dir(&stale, &lexical);
        }
        let run = dir.path().join(format!("{mode}-{bm25}.run"));
        let mut c = engine(dir.path());
        c.args(["eval", "--mode", mode, "--dataset"]).arg(&data).arg("--db").arg(&db);
        c.arg("--run-out").arg(&run);
        let r = json(c);
        let run = std::fs::read_to_string(&run).unwrap();
        assert!(
            !run.contains("tides"),
            "{mode} with {bm25} BM25 ranked a deleted document:\n{run}"
        );
        assert_eq!(r["recall@10"], 0.5, "{mode} with {bm25} BM25: {r}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `engine search --filter` (Qdrant filter JSON) returns only matching documents, with their
/// metadata, in every mode; a bad filter is a clear error.
#[test]
fn search_filter_keeps_only_matching_documents_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let docs = [
        ("tides", "The moon pulls the oceans and causes the tides.", "sea", 2001),
        ("waves", "Wind over the ocean raises waves; the moon does not.", "sea", 2015),
        ("bread", "Yeast makes dough rise; the moon has nothing to do with it.", "food", 1999),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, text, topic, year)| {
            serde_json::json!({"_id": id, "title": "", "text": text, "topic": topic, "year": year})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(data.join("corpus.jsonl"), corpus).unwrap();
    let db = dir.path().join("db");
    let mut c = engine(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db);
    json(c);
    let food = r#"{"must": [{"key": "topic", "match": {"value": "food"}}]}"#;
    let late_sea = r#"{"must": [{"key": "topic", "match": {"any": ["sea"]}}],
                       "must_not": [{"key": "year", "range": {"lt": 2010}}]}"#;
    for mode in ["dense", "bm25", "hybrid"] {
        for (filter, want) in [(food, "bread"), (late_sea, "waves")] {
            let mut c = engine(dir.path());
            c.args(["search", "--mode", mode, "-k", "3", "--filter", filter, "--db"]).arg(&db);
            c.arg("the moon and the tides");
            let v = json(c);
            let hits = v["hits"].as_array().unwrap();
            assert_eq!(hits.len(), 1, "{mode} {filter}: {v}");
            assert_eq!(hits[0]["id"], want, "{mode}: {v}");
            assert!(hits[0]["metadata"]["topic"].is_string(), "{mode}: {v}");
        }
    }
    let mut c = engine(dir.path());
    c.args(["search", "--filter", r#"{"must": [{"key": "year", "range": {}}]}"#, "--db"]);
    let out = c.arg(&db).arg("moon").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("range"), "{out:?}");
}

/// A search naming no mode over a database with BM25 and a fine-tuned encoder (the test
/// embedder says it is trained, as the shipped encoder does) is hybrid, the mode that beats
/// BM25 with the shipped encoder (docs/results.md).
#[test]
fn a_search_naming_no_mode_is_hybrid_with_a_trained_encoder() {
    let (dir, _, db) = indexed_dataset();
    let mut c = engine(dir.path());
    c.args(["search", "-k", "2", "--db"]).arg(&db).arg("what makes dough rise");
    let v = json(c);
    assert_eq!(v["mode"], "hybrid", "{v}");
    assert_eq!(v["hits"][0]["id"], "bread", "{v}");
}

#[test]
fn lexical_only_database_answers_bm25_and_refuses_dense() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("lex");
    let mut c = engine(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db).arg("--lexical-only");
    assert_eq!(json(c)["documents"], 4);
    let mut c = engine(dir.path());
    c.args(["search", "--mode", "bm25", "--db"]).arg(&db).arg("inverted index words");
    assert_eq!(json(c)["hits"][0]["id"], "index");
    let mut c = engine(dir.path());
    c.args(["search", "--mode", "dense", "--db"]).arg(&db).arg("words");
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lexical-only"));
}

#[test]
fn eval_without_qrels_and_bad_mode_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let mut c = engine(dir.path());
    c.args(["eval", "--mode", "bm25", "--split", "dev", "--dataset"])
        .arg(&data)
        .arg("--db")
        .arg(dir.path().join("x"));
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dev.tsv"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = engine(dir.path());
    c.args(["search", "--mode", "fuzzy", "--db"]).arg(dir.path()).arg("q");
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dense, bm25 or hybrid"));
}

/// `engine delete` opens the database as a search does: a damaged BM25 folder is rebuilt
/// from the store instead of refusing the delete, and the delete reaches BM25.
#[test]
fn delete_repairs_a_damaged_bm25_index_first() {
    let (dir, _data, db) = indexed_dataset();
    for f in std::fs::read_dir(engine::store::lexical_dir(&db)).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let mut c = engine(dir.path());
    c.args(["delete", "--db"]).arg(&db).arg("tides");
    assert_eq!(json(c)["deleted"], 1);
    let mut c = engine(dir.path());
    c.args(["search", "--mode", "bm25", "--db"]).arg(&db).arg("moon gravity tides dough");
    let ids: Vec<String> = json(c)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["bread"], "BM25 rebuilt, without the deleted document");
}

/// `--alpha` (and `--fusion`, `--rrf-k`) set hybrid mode's fusion for one search, and
/// `--score-threshold` cuts the hits; a bad value is an error naming the flag.
#[test]
fn search_takes_fusion_settings_and_a_score_threshold() {
    let (dir, _, db) = indexed_dataset();
    let search = |args: &[&str]| {
        let mut c = engine(dir.path());
        c.args(["search", "-k", "3", "--db"]).arg(&db).args(args).arg("the moon and the tides");
        c
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().into()).collect()
    };
    let dense = ids(&json(search(&["--mode", "dense"])));
    let bm25 = ids(&json(search(&["--mode", "bm25"])));
    assert_eq!(ids(&json(search(&["--mode", "hybrid", "--alpha", "1"]))), dense);
    assert_eq!(ids(&json(search(&["--mode", "hybrid", "--alpha", "0"])))[0], bm25[0]);
    let v = json(search(&["--mode", "hybrid", "--fusion", "rrf", "--rrf-k", "1"]));
    assert_eq!(v["hits"].as_array().unwrap().len(), 3, "{v}");
    let top = json(search(&["--mode", "bm25"]))["hits"][0]["score"].as_f64().unwrap();
    let above = format!("{}", top * 2.0 + 1.0);
    assert!(ids(&json(search(&["--mode", "bm25", "--score-threshold", &above]))).is_empty());
    for (args, flag) in [
        (&["--mode", "hybrid", "--alpha", "2"][..], "alpha"),
        (&["--mode", "bm25", "--alpha", "0.5"][..], "--alpha"),
        (&["--mode", "hybrid", "--rrf-k", "0"][..], "rrf_k"),
        (&["--mode", "hybrid", "--fusion", "max"][..], "fusion"),
        (&["--mode", "dense", "--ef", "0"][..], "ef"),
        (&["--mode", "dense", "--score-threshold", "inf"][..], "score_threshold"),
    ] {
        let out = search(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && !err.contains("panicked"), "{args:?}: {err}");
    }
}
