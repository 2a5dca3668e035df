//! End-to-end tests of `engine index / search / delete / check` through the binary.
//!
//! Most run with the hidden `ENGINE_TEST_HASH_ENCODER` hook (a deterministic bag-of-words
//! embedder), so they exercise the real CLI, store and index without model files. The tests at
//! the bottom use a real (tiny, random) Llama encoder from `encoder::testing::write_tiny_model`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use engine::store::Database;

mod common;
use common::{stored_state, StoredState};

const HASH_DIM: &str = "48";

fn engine(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env("ENGINE_TEST_HASH_ENCODER", HASH_DIM).env_remove("ENGINE_TEST_SLOW_BATCH_MS");
    c.arg("--config").arg(config);
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A config with small batches and chunks so a small corpus has many batches.
fn setup(dir: &Path) -> PathBuf {
    let p = dir.join("test.toml");
    std::fs::write(&p, "[encoder]\nbatch_size = 4\n[index]\nchunk_tokens = 12\nchunk_overlap = 3\nbackend = \"hnsw\"\nwindow_batches = 8\n")
        .unwrap();
    p
}

const TOPICS: &[&str] = &[
    "apple banana cherry fruit orchard harvest",
    "rust compiler borrow checker lifetimes",
    "ocean waves tide coral reef fish",
    "galaxy star nebula telescope orbit",
    "violin cello orchestra symphony concert",
];

fn write_corpus(path: &Path, n: usize) {
    let mut s = String::new();
    for i in 0..n {
        let topic = TOPICS[i % TOPICS.len()];
        // Pseudo-random extra words make near-ties between documents of one topic unlikely, so
        // approximate and exact backends agree on the order.
        let extra: Vec<String> = (0..4u64)
            .map(|j| {
                format!("x{}", (i as u64 * 7919 + j * 104_729).wrapping_mul(2_654_435_761) % 997)
            })
            .collect();
        let extra = extra.join(" ");
        let text = (0..1 + i % 3)
            .map(|r| format!("{topic} note{i} part{r} {extra}"))
            .collect::<Vec<_>>()
            .join(" ");
        s.push_str(
            &serde_json::json!({"_id": format!("d{i}"), "title": format!("T{i}"), "text": text})
                .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn hit_ids(v: &serde_json::Value) -> Vec<String> {
    v["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

fn search(cfg: &Path, db: &Path, q: &str) -> serde_json::Value {
    let mut c = engine(cfg);
    c.args(["search", "--db"]).arg(db).args(["-k", "5", q]);
    ok_json(run(c))
}

#[test]
fn index_search_reopen_delete_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let corpus = dir.path().join("c.jsonl");
    write_corpus(&corpus, 30);
    let db = dir.path().join("db");
    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&db).arg("--verify");
    let v = ok_json(run(c));
    assert_eq!(v["report"]["added"], 30);
    assert!(v["verify"]["recall"].as_f64().unwrap() > 0.8, "{v}");

    // A new process reopens the database from disk.
    let v = search(&cfg, &db, "galaxy nebula note13 part1");
    assert_eq!(hit_ids(&v)[0], "d13", "{v}");
    let hit = &v["hits"][0];
    assert_eq!(hit["title"], "T13");
    assert!(hit["snippet"].as_str().unwrap().contains("note13"));
    assert!(hit["score"].as_f64().unwrap() > 0.0);

    let mut c = engine(&cfg);
    c.args(["delete", "--db"]).arg(&db).args(["d13", "missing-id"]);
    let v = ok_json(run(c));
    assert_eq!(v["deleted"], 1);
    assert_eq!(v["not_found"][0], "missing-id");
    assert!(!hit_ids(&search(&cfg, &db, "galaxy nebula note13 part1")).contains(&"d13".to_string()));

    let mut c = engine(&cfg);
    c.args(["check", "--db"]).arg(&db).args(["--queries", "20"]);
    let v = ok_json(run(c));
    assert!(v["recall_at_10"].as_f64().unwrap() > 0.8, "{v}");
    assert_eq!(v["status"]["documents"], 29);

    // Same query, every backend: same top-k (switching backend rebuilds from stored vectors).
    let reference = hit_ids(&search(&cfg, &db, "ocean coral note7"));
    for backend in ["flat", "faiss"] {
        if backend == "faiss" && !cfg!(feature = "faiss") {
            continue;
        }
        let mut c = engine(&cfg);
        c.arg("index").arg(&corpus).arg("--db").arg(&db).args(["--backend", backend]);
        // d13 is back (re-added), so compare against a fresh reference afterwards.
        ok_json(run(c));
        let mut c = engine(&cfg);
        c.args(["delete", "--db"]).arg(&db).arg("d13");
        ok_json(run(c));
        assert_eq!(hit_ids(&search(&cfg, &db, "ocean coral note7")), reference, "{backend}");
    }
}

#[test]
fn bad_lines_duplicates_and_empty_documents() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let corpus = dir.path().join("c.jsonl");
    std::fs::write(
        &corpus,
        "{\"_id\":\"a\",\"text\":\"alpha beta\"}\n{\"_id\":\"b\",\"text\":\"gamma\"\n{\"_id\":\"e\",\"text\":\"\"}\n{\"_id\":\"c\",\"text\":\"delta\"}\n",
    )
    .unwrap();
    let db = dir.path().join("db");
    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&db);
    let out = run(c);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.jsonl:2"), "{err}");
    assert!(
        !db.join(engine::store::SLED_DIR).exists()
            || Database::open(&db, None).unwrap().status().unwrap().documents == 0
    );

    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&db).arg("--skip-bad");
    let out = run(c);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let v = ok_json(out);
    assert!(err.contains("c.jsonl:2"), "{err}");
    assert_eq!(v["bad_lines_skipped"], 1);
    assert_eq!(v["report"]["added"], 2);
    assert_eq!(v["report"]["empty_skipped"], 1);

    // Stored id with different content: refused unless --update; nothing lost on refusal.
    std::fs::write(&corpus, "{\"_id\":\"a\",\"text\":\"alpha changed\"}\n").unwrap();
    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&db);
    let out = run(c);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--update"));
    assert_eq!(
        Database::open(&db, None).unwrap().get_document("a").unwrap().unwrap().text,
        "alpha beta"
    );
    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&db).arg("--update");
    assert_eq!(ok_json(run(c))["report"]["updated"], 1);
    assert_eq!(
        Database::open(&db, None).unwrap().get_document("a").unwrap().unwrap().text,
        "alpha changed"
    );
}

fn state(db: &Path) -> StoredState {
    stored_state(&Database::open(db, None).unwrap())
}

/// Kill an indexing run mid-way (SIGKILL), run the same command again: the final state equals
/// an uninterrupted run's.
#[test]
fn killed_index_run_resumes_to_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let corpus = dir.path().join("c.jsonl");
    write_corpus(&corpus, 240);

    let full = dir.path().join("full");
    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&full);
    let total = ok_json(run(c))["status"]["passages"].as_u64().unwrap();

    let part = dir.path().join("part");
    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&part).env("ENGINE_TEST_SLOW_BATCH_MS", "40");
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait until some documents are committed, then kill without warning.
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        assert!(child.try_wait().unwrap().is_none(), "run finished before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(60));
        if started.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = Database::open(&part, None).unwrap().status().unwrap();
    assert!(partial.passages < total, "killed run must be incomplete: {partial:?}");

    let mut c = engine(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&part);
    let v = ok_json(run(c));
    assert_eq!(v["status"]["passages"].as_u64().unwrap(), total);
    assert_eq!(state(&part), state(&full));
    for q in ["violin cello note44", "rust borrow note101 part2", "apple harvest"] {
        assert_eq!(hit_ids(&search(&cfg, &part, q)), hit_ids(&search(&cfg, &full, q)), "{q}");
    }
}

#[test]
fn folder_of_text_files_and_non_utf8_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("guide")).unwrap();
    std::fs::write(
        docs.join("guide/intro.md"),
        "# Getting Started\nInstall the telescope and point it at the nebula.",
    )
    .unwrap();
    std::fs::write(docs.join("notes.txt"), "The violin and cello play in the orchestra.").unwrap();
    std::fs::write(docs.join("broken.txt"), [b'a', 0xff, b'b']).unwrap();
    let db = dir.path().join("db");
    let mut c = engine(&cfg);
    c.arg("index").arg(&docs).arg("--db").arg(&db);
    let out = run(c);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.txt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = engine(&cfg);
    c.arg("index").arg(&docs).arg("--db").arg(&db).arg("--skip-bad");
    assert_eq!(ok_json(run(c))["report"]["added"], 2);
    let v = search(&cfg, &db, "telescope nebula");
    assert_eq!(v["hits"][0]["id"], "guide/intro.md");
    assert_eq!(v["hits"][0]["title"], "Getting Started");
}

// ---- Real encoder (tiny random Llama). ----

/// A config pointing at a freshly written tiny model.
fn tiny_model_config(dir: &Path) -> PathBuf {
    let model = engine::encoder::testing::write_tiny_model(&dir.join("model"), 7).unwrap();
    let p = dir.join("tiny.toml");
    std::fs::write(
        &p,
        format!(
            "[model]\npath = {:?}\n[encoder]\nbatch_size = 4\n[index]\nchunk_tokens = 16\nchunk_overlap = 4\nwindow_batches = 8\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    p
}

fn real(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env_remove("ENGINE_TEST_HASH_ENCODER").env_remove("ENGINE_TEST_SLOW_BATCH_MS");
    c.arg("--config").arg(config);
    c
}

#[test]

fn tiny_model_index_search_reopen_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(dir.path());
    let corpus = dir.path().join("c.jsonl");
    write_corpus(&corpus, 20);
    let db = dir.path().join("db");
    let mut c = real(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&db).arg("--verify");
    let v = ok_json(run(c));
    assert_eq!(v["report"]["added"], 20);
    let mut c = real(&cfg);
    c.args(["search", "--db"]).arg(&db).args(["-k", "3", "galaxy nebula"]);
    let v = ok_json(run(c));
    assert_eq!(v["hits"].as_array().unwrap().len(), 3);
    // Another pooling gives another fingerprint: the database refuses it.
    let mut c = real(&cfg);
    c.args(["search", "--db"]).arg(&db).args(["--pooling", "mean", "galaxy"]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("encoder mismatch"));
}

/// Equal documents and passages, and vectors equal within `tol`: a real encoder's floats depend
/// (in the last bits) on which texts share a padded batch, and a resumed run batches the
/// remaining passages differently.
fn assert_same_state(a: &StoredState, b: &StoredState, tol: f32) {
    assert_eq!(a.len(), b.len());
    for ((ida, da, pa), (idb, db, pb)) in a.iter().zip(b) {
        assert_eq!((ida, da), (idb, db));
        assert_eq!(pa.len(), pb.len());
        for ((ra, va), (rb, vb)) in pa.iter().zip(pb) {
            assert_eq!(ra, rb);
            let d = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(d <= tol, "{ida} passage {}: vectors differ by {d}", ra.ordinal);
        }
    }
}

#[test]
fn tiny_model_killed_run_resumes_to_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(dir.path());
    let corpus = dir.path().join("c.jsonl");
    write_corpus(&corpus, 120);
    let full = dir.path().join("full");
    let mut c = real(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&full);
    ok_json(run(c));
    let part = dir.path().join("part");
    let mut c = real(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&part).env("ENGINE_TEST_SLOW_BATCH_MS", "30");
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(child.try_wait().unwrap().is_none(), "run finished before it could be killed");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut c = real(&cfg);
    c.arg("index").arg(&corpus).arg("--db").arg(&part);
    ok_json(run(c));
    assert_same_state(&state(&part), &state(&full), 1e-5);
}
