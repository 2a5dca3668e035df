//! The newcomer's path (issue 14): databases that describe themselves (search, eval and serve
//! load the encoder a database records, a contradicting flag is an error naming both values,
//! relative model paths in a config resolve against its folder), lexical-only databases that
//! answer with titles and snippets without a model, a clear message for a database in use,
//! batch search to a TREC run, Pyserini JSONL, `--limit` and empty-corpus warnings.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary with no config and no test hooks, run in `cwd`.
fn bare(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env_remove("ENGINE_TEST_HASH_ENCODER")
        .env_remove("ENGINE_TEST_SLOW_BATCH_MS")
        .env_remove("ENGINE_API_KEY")
        .current_dir(cwd);
    c
}

/// The binary with the hashed bag-of-words test encoder and a flat index.
fn hashed(dir: &Path) -> Command {
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, "[index]\nbackend = \"flat\"\n").unwrap();
    let mut c = bare(dir);
    c.env("ENGINE_TEST_HASH_ENCODER", "64").arg("--config").arg(cfg);
    c
}

fn ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(c: Command) -> serde_json::Value {
    serde_json::from_slice(&ok(c).stdout).unwrap()
}

/// Runs `c`, expects failure, returns its stderr.
fn fails(mut c: Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

const DOCS: [(&str, &str, &str); 4] = [
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
    ("stars", "Stars", "A star fuses hydrogen into helium in its core until the fuel runs out."),
];

fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let corpus: String = DOCS
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"what makes dough rise\"}\n\
         {\"_id\":\"q2\",\"text\":\"moon gravity tides\"}\n\
         {\"_id\":\"q3\",\"text\":\"hydrogen helium star core\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\tbread\t1\nq2\ttides\t1\nq3\tstars\t1\n",
    )
    .unwrap();
}

/// A TREC run as (qid, docid, rank, score) rows.
fn trec_rows(path: &Path) -> Vec<(String, String, usize, f32, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(c.len(), 6, "{l}");
            (c[0].into(), c[2].into(), c[3].parse().unwrap(), c[4].parse().unwrap(), c[5].into())
        })
        .collect()
}

#[test]
fn batch_search_writes_the_run_eval_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("db");
    let mut c = hashed(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db);
    ok(c);
    for mode in ["dense", "bm25", "hybrid"] {
        let eval_run = dir.path().join(format!("eval-{mode}.run"));
        let search_run = dir.path().join(format!("search-{mode}.run"));
        let mut c = hashed(dir.path());
        c.args(["eval", "--mode", mode, "-k", "3", "--dataset"]).arg(&data).arg("--db").arg(&db);
        c.arg("--run-out").arg(&eval_run);
        ok(c);
        let mut c = hashed(dir.path());
        c.args(["search", "--mode", mode, "-k", "3", "--db"]).arg(&db);
        c.arg("--queries").arg(data.join("queries.jsonl")).arg("--run-out").arg(&search_run);
        let out = ok(c);
        assert!(out.stdout.is_empty(), "--run-out alone prints nothing on stdout");
        let (a, b) = (trec_rows(&eval_run), trec_rows(&search_run));
        assert!(a.len() >= 3, "{mode}: {a:?}");
        assert_eq!(a, b, "{mode}: batch search and eval runs differ");
    }
    // The same queries as TSV (Pyserini's topics), printed as TREC on stdout and as JSON lines.
    let tsv = dir.path().join("topics.tsv");
    std::fs::write(&tsv, "q1\twhat makes dough rise\nq2\tmoon gravity tides\n").unwrap();
    let mut c = hashed(dir.path());
    c.args(["search", "--mode", "bm25", "-k", "1", "--format", "trec", "--db"]).arg(&db);
    c.arg("--queries").arg(&tsv);
    let text = String::from_utf8(ok(c).stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("q1 Q0 bread 1 ") && lines[0].ends_with(" engine-bm25"), "{text}");
    let mut c = hashed(dir.path());
    c.args(["search", "--mode", "bm25", "-k", "1", "--db"]).arg(&db).arg("--queries").arg(&tsv);
    let text = String::from_utf8(ok(c).stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["query_id"], "q1");
    assert_eq!(first["hits"][0]["id"], "bread");
    // Table output names the hits; bad formats and queries files are clear errors.
    let mut c = hashed(dir.path());
    c.args(["search", "--mode", "bm25", "--format", "table", "--db"]).arg(&db).arg("moon tides");
    let text = String::from_utf8(ok(c).stdout).unwrap();
    assert!(text.contains("tides") && text.contains("Ocean tides"), "{text}");
    let mut c = hashed(dir.path());
    c.args(["search", "--format", "xml", "--db"]).arg(&db).arg("moon");
    assert!(fails(c).contains("--format"));
    std::fs::write(&tsv, "q1 no tab here\n").unwrap();
    let mut c = hashed(dir.path());
    c.args(["search", "--db"]).arg(&db).arg("--queries").arg(&tsv);
    assert!(fails(c).contains("topics.tsv:1"));
}

/// The CLI's hits have the server's shape: id, score, title, snippet, highlights.
#[test]
fn cli_hits_have_the_servers_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("db");
    let mut c = hashed(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db);
    ok(c);
    let mut c = hashed(dir.path());
    c.args(["search", "-k", "1", "--db"]).arg(&db).arg("moon gravity tides");
    let v = json(c);
    let hit = v["hits"][0].as_object().unwrap();
    let mut keys: Vec<&str> = hit.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["highlights", "id", "score", "snippet", "title"], "{v}");
    for key in ["took_ms", "encoder", "mode", "score_kind", "query"] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
}

#[test]
fn lexical_only_database_searches_and_checks_with_titles_and_snippets_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("lex");
    // A model path that does not exist: nothing below may try to load it.
    let cfg = dir.path().join("nomodel.toml");
    std::fs::write(&cfg, "[model]\npath = \"/nonexistent/model.gguf\"\n").unwrap();
    let engine = || {
        let mut c = bare(dir.path());
        c.arg("--config").arg(&cfg);
        c
    };
    let mut c = engine();
    c.arg("index").arg(&data).arg("--db").arg(&db).arg("--lexical-only");
    assert_eq!(json(c)["documents"], 4);
    let mut c = engine();
    c.args(["search", "--db"]).arg(&db).arg("moon gravity");
    let v = json(c);
    assert_eq!(v["mode"], "bm25");
    assert_eq!(v["hits"][0]["id"], "tides");
    assert_eq!(v["hits"][0]["title"], "Ocean tides");
    assert!(v["hits"][0]["snippet"].as_str().unwrap().contains("gravity of the moon"), "{v}");
    let mut c = engine();
    c.args(["check", "--db"]).arg(&db);
    let v = json(c);
    assert_eq!(v["lexical_only"], true);
    assert_eq!(v["documents"], 4);
    let mut c = engine();
    c.args(["info", "--db"]).arg(&db);
    let v = json(c);
    assert_eq!(v["lexical_only"], true);
    assert_eq!(v["default_mode"], "bm25");
    // The server answers BM25 with titles and snippets; it never loads the (missing) model.
    // (Its log here is JSON lines, --log-format json.)
    let mut c = engine();
    c.args(["serve", "--log-format", "json", "--log-requests", "--addr", "127.0.0.1:0", "--db"]);
    c.arg(&db);
    let mut server = Serving::start(c);
    let body = server.get_when_ready("/search?q=moon+gravity&k=2");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["mode"].as_str(), v["score_kind"].as_str()), (Some("bm25"), Some("bm25")), "{v}");
    assert_eq!(v["encoder"], "none", "{v}");
    assert_eq!(v["hits"][0]["id"], "tides", "{v}");
    assert_eq!(v["hits"][0]["title"], "Ocean tides", "{v}");
    assert!(v["hits"][0]["snippet"].as_str().unwrap().contains("gravity of the moon"), "{v}");
    assert_eq!(v["hits"][0]["highlights"], serde_json::json!(["gravity", "moon"]), "{v}");
    // Per-request settings that apply to BM25 work here too: a threshold above the best
    // score leaves nothing (and nothing more).
    let best = v["hits"][0]["score"].as_f64().unwrap();
    let (st, cut) = http_get(
        &server.addr,
        &format!("/search?q=moon+gravity&k=2&score_threshold={}", best + 1.0),
    );
    assert_eq!(st, 200, "{cut}");
    let cut: serde_json::Value = serde_json::from_str(&cut).unwrap();
    assert_eq!(
        (cut["hits"].as_array().map(Vec::len), cut["more"].as_bool()),
        (Some(0), Some(false))
    );
    let (_, doc) = http_get(&server.addr, "/documents/tides");
    assert!(doc.contains("The gravity of the moon"), "{doc}");
    let (_, status) = http_get(&server.addr, "/status");
    assert!(
        status.contains("\"lexical_only\":true") && status.contains("\"modes\":[\"bm25\"]"),
        "{status}"
    );
    // What needs an encoder is refused, saying why.
    let (st, body) = http_get(&server.addr, "/search?q=moon&mode=dense");
    assert_eq!(st, 422, "{body}");
    let docs = r#"{"documents": [{"id": "x", "text": "new"}]}"#;
    for (method, path, body) in [
        ("POST", "/documents", docs),
        ("POST", "/embed", r#"{"inputs": "moon"}"#),
        ("DELETE", "/documents/tides", ""),
        ("POST", "/documents/delete", r#"{"ids": ["tides"]}"#),
        ("POST", "/documents/delete?wait=false", r#"{"ids": ["tides"]}"#),
        ("POST", "/documents?wait=false", docs),
        ("PATCH", "/documents/tides", r#"{"metadata": {"topic": "sea"}}"#),
        ("GET", "/documents", ""),
    ] {
        let (st, got) = http(&server.addr, method, path, body);
        assert_eq!(st, 422, "{method} {path}: {got}");
        assert!(got.contains("lexical_only") && got.contains("--lexical-only"), "{got}");
    }
    // Indexing more into it while it serves works (the server holds no writer) and shows.
    let more = dir.path().join("more.jsonl");
    let line = serde_json::json!({"_id": "comets", "title": "Comets", "text": "Icy comets."});
    std::fs::write(&more, format!("{line}\n")).unwrap();
    let mut c = engine();
    c.arg("index").arg(&more).arg("--db").arg(&db).arg("--lexical-only");
    assert_eq!(json(c)["documents"], 5);
    let (_, body) = http_get(&server.addr, "/search?q=icy+comets");
    assert!(body.contains("\"id\":\"comets\""), "{body}");
    // A snapshot of it, from the server and from the CLI, restores to the same BM25 answers.
    let (st, snap) = http(&server.addr, "POST", "/snapshots", "{}");
    assert_eq!(st, 200, "{snap}");
    let snap: serde_json::Value = serde_json::from_str(&snap).unwrap();
    assert_eq!(
        (snap["kind"].as_str(), snap["documents"].as_u64()),
        (Some("lexical_only"), Some(5))
    );
    let rest = server.stop();
    assert!(rest.contains("lexical-only BM25 index") && rest.contains("no encoder"), "{rest}");
    let cli_archive = dir.path().join("lex.tar");
    let mut c = engine();
    c.args(["snapshot", "--db"]).arg(&db).arg("--out").arg(&cli_archive);
    ok(c);
    for (i, archive) in [snap["path"].as_str().unwrap().into(), cli_archive].iter().enumerate() {
        let restored = dir.path().join(format!("lex-restored-{i}"));
        let mut c = engine();
        c.arg("restore").arg(archive).arg("--db").arg(&restored);
        ok(c);
        let mut c = engine();
        c.args(["search", "--db"]).arg(&restored).arg("moon gravity");
        let v = json(c);
        assert_eq!(
            (v["hits"][0]["id"].as_str(), v["hits"][0]["title"].as_str()),
            (Some("tides"), Some("Ocean tides"))
        );
    }
    let lines: Vec<serde_json::Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["event"] == "ready" && l["encoder"] == "none"), "{rest}");
    let request = lines
        .iter()
        // The first may be a 503 of get_when_ready's polling while the index loads.
        .find(|l| l["event"] == "request" && l["path"] == "/search" && l["status"] != 503)
        .unwrap_or_else(|| panic!("no request line: {rest}"));
    assert_eq!((request["method"].as_str(), request["status"].as_u64()), (Some("GET"), Some(200)));
    assert!(request["ms"].is_f64() && request["ts"].is_f64(), "{request}");
    assert!(!rest.contains("moon+gravity"), "query strings stay out of the log: {rest}");
}

#[test]
fn a_database_in_use_names_itself_and_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let db = dir.path().join("db");
    let mut c = hashed(dir.path());
    c.arg("index").arg(&data).arg("--db").arg(&db);
    ok(c);
    // This process holds the database open, as a running server would.
    let held = engine::store::Database::open(&db, None).unwrap();
    for args in [&["search", "--mode", "dense"][..], &["check"], &["info"]] {
        let mut c = hashed(dir.path());
        c.args(args).arg("--db").arg(&db);
        if args[0] == "search" {
            c.arg("moon");
        }
        let err = fails(c);
        assert!(err.contains("in use by another process"), "{args:?}: {err}");
        // The holder is this test process; Linux says which one (`/proc/locks`).
        if cfg!(target_os = "linux") {
            assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        }
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(err.contains("query the running server"), "{err}");
        assert!(!err.contains("WouldBlock"), "{err}");
    }
    drop(held);
}

#[test]
fn pyserini_jsonl_field_flags_limit_and_empty_corpus_warning() {
    let dir = tempfile::tempdir().unwrap();
    let pyserini = dir.path().join("pyserini.jsonl");
    let lines: String = DOCS
        .iter()
        .map(|(id, t, x)| {
            serde_json::json!({"id": id, "contents": format!("{t}. {x}")}).to_string() + "\n"
        })
        .collect();
    std::fs::write(&pyserini, lines).unwrap();
    let mut c = hashed(dir.path());
    c.arg("index").arg(&pyserini).arg("--db").arg(dir.path().join("p"));
    assert_eq!(json(c)["report"]["added"], 4);
    // Other field names by flag; --limit keeps the first N.
    let custom = dir.path().join("custom.jsonl");
    let lines: String = DOCS
        .iter()
        .map(|(id, t, x)| {
            serde_json::json!({"docno": id, "headline": t, "body": x}).to_string() + "\n"
        })
        .collect();
    std::fs::write(&custom, lines).unwrap();
    let mut c = hashed(dir.path());
    c.arg("index").arg(&custom).arg("--db").arg(dir.path().join("c"));
    assert!(fails(c).contains("--id-field"));
    let mut c = hashed(dir.path());
    c.arg("index").arg(&custom).arg("--db").arg(dir.path().join("c"));
    c.args(["--id-field", "docno", "--title-field", "headline", "--text-field", "body"]);
    c.args(["--limit", "2"]);
    assert_eq!(json(c)["report"]["added"], 2);
    let mut c = hashed(dir.path());
    c.args(["search", "--mode", "bm25", "--db"]).arg(dir.path().join("c")).arg("moon gravity");
    let v = json(c);
    assert_eq!(v["hits"][0]["title"], "Ocean tides", "{v}");
    // An empty folder (or only unsupported files) indexes nothing, with a warning.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.pdf"), b"%PDF").unwrap();
    for lexical in [false, true] {
        let mut c = hashed(dir.path());
        c.arg("index").arg(&empty).arg("--db").arg(dir.path().join(format!("e{lexical}")));
        if lexical {
            c.arg("--lexical-only");
        }
        let err = String::from_utf8(ok(c).stderr).unwrap();
        assert!(err.contains("warning") && err.contains("no .txt or .md file"), "{err}");
    }
}

// ---- A real (tiny, random) encoder: the database records it. ----

/// Writes a tiny model in `dir/model` and a config in `dir/conf/tiny.toml` naming it by a path
/// relative to the config's folder.
fn tiny_setup(dir: &Path) -> PathBuf {
    engine::encoder::testing::write_tiny_model(&dir.join("model"), 7).unwrap();
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let cfg = dir.join("conf/tiny.toml");
    std::fs::write(
        &cfg,
        "[model]\npath = \"../model\"\n[encoder]\nbatch_size = 4\n[index]\nbackend = \"flat\"\n",
    )
    .unwrap();
    let corpus = dir.join("corpus.jsonl");
    let lines: String = DOCS
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    cfg
}

#[test]
fn a_database_loads_the_encoder_it_records_and_refuses_a_contradicting_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_setup(dir.path());
    let db = dir.path().join("db");
    let elsewhere = tempfile::tempdir().unwrap();
    // The config's relative model path resolves against the config's folder, from any cwd.
    let mut c = bare(elsewhere.path());
    c.arg("--config")
        .arg(&cfg)
        .arg("index")
        .arg(dir.path().join("corpus.jsonl"))
        .arg("--db")
        .arg(&db);
    assert_eq!(json(c)["report"]["added"], 4);
    // A path only the working directory holds (as configs/default.toml's, passed with --config
    // from the repository root) is read from the working directory.
    std::fs::create_dir_all(dir.path().join("conf2")).unwrap();
    std::fs::write(dir.path().join("conf2/c.toml"), "[model]\npath = \"model\"\n").unwrap();
    let mut c = bare(dir.path());
    c.args(["--config", "conf2/c.toml", "info"]);
    assert_eq!(json(c)["embedding_dim"], 64);
    // No config and another cwd: the database's own encoder is loaded.
    let mut c = bare(elsewhere.path());
    c.args(["search", "--mode", "dense", "-k", "2", "--db"]).arg(&db).arg("moon tides");
    assert_eq!(json(c)["hits"].as_array().unwrap().len(), 2);
    let mut c = bare(elsewhere.path());
    c.args(["info", "--db"]).arg(&db);
    let v = json(c);
    let recorded = PathBuf::from(v["model_path"].as_str().unwrap());
    assert!(recorded.is_absolute() && recorded.ends_with("model"), "{v}");
    // A contradicting flag or config value names both values.
    let mut c = bare(elsewhere.path());
    c.args(["search", "--mode", "dense", "--pooling", "mean", "--db"]).arg(&db).arg("moon");
    let err = fails(c);
    assert!(
        err.contains("--pooling") && err.contains("\"mean\"") && err.contains("\"llama2vec\""),
        "{err}"
    );
    let other_cfg = dir.path().join("mean.toml");
    std::fs::write(&other_cfg, "[encoder]\npooling = \"mean\"\n").unwrap();
    let mut c = bare(elsewhere.path());
    c.arg("--config")
        .arg(&other_cfg)
        .args(["search", "--mode", "dense", "--db"])
        .arg(&db)
        .arg("moon");
    let err = fails(c);
    assert!(err.contains("encoder.pooling in") && err.contains("\"llama2vec\""), "{err}");
    let other_model =
        engine::encoder::testing::write_tiny_model(&dir.path().join("other"), 8).unwrap();
    let mut c = bare(elsewhere.path());
    c.args(["search", "--mode", "dense", "--model"])
        .arg(&other_model)
        .arg("--db")
        .arg(&db)
        .arg("moon");
    let err = fails(c);
    assert!(err.contains("encoder mismatch") && err.contains("--model"), "{err}");
    assert!(err.contains(&recorded.display().to_string()), "{err}");
    // eval too: the database's encoder without flags.
    let data = dir.path().join("data");
    write_dataset(&data);
    let mut c = bare(elsewhere.path());
    c.args(["eval", "--mode", "dense", "--dataset"]).arg(&data).arg("--db").arg(&db);
    assert_eq!(json(c)["queries"], 3);
    // serve: a contradicting flag fails before listening, naming the database's setting.
    let mut c = bare(elsewhere.path());
    c.args(["serve", "--template", "none", "--addr", "127.0.0.1:0", "--db"]).arg(&db);
    let err = fails(c);
    assert!(err.contains("--template") && err.contains("\"llama2vec\""), "{err}");
    // serve with no config and no flags loads the database's encoder and answers.
    let mut c = bare(elsewhere.path());
    c.args(["serve", "--log-requests", "--addr", "127.0.0.1:0", "--db"]).arg(&db);
    let mut server = Serving::start(c);
    let body = server.get_when_ready("/search?q=moon+tides&k=2&mode=dense");
    let rest = server.stop();
    let addr = server.addr.clone();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["encoder"], "model", "{v}");
    // A ready line says where it listens and what it loaded; --log-requests logs each request.
    let ready = rest.lines().find(|l| l.contains("ready at")).unwrap_or_else(|| panic!("{rest}"));
    assert!(ready.contains(&format!("http://{addr}/")), "{ready}");
    assert!(ready.contains("4 documents") && ready.contains("encoder model"), "{ready}");
    assert!(rest.lines().any(|l| l.starts_with("GET /search 200 ")), "{rest}");
    assert!(!rest.contains("moon+tides"), "the request log leaves out query strings: {rest}");
}

/// An `engine serve` child process, its address read from its first stderr lines.
struct Serving {
    child: std::process::Child,
    stderr: BufReader<std::process::ChildStderr>,
    addr: String,
}

impl Serving {
    fn start(mut c: Command) -> Self {
        let mut child = c.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut addr = None;
        while addr.is_none() {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).map(String::from);
        }
        let addr = addr.unwrap_or_else(|| panic!("no address line from serve: {line}"));
        Serving { child, stderr, addr }
    }

    /// GET `path` once the server is ready (503 until then); the body of the 200.
    fn get_when_ready(&self, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = http_get(&self.addr, path);
            if status == 200 {
                return body;
            }
            assert!(status == 503 && Instant::now() < deadline, "{status}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server; the rest of its stderr.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        rest
    }
}

/// A minimal HTTP/1.1 GET (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, "")
}

/// A minimal HTTP/1.1 request with a JSON body (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn eval_prints_a_table_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data);
    let mut c = hashed(dir.path());
    c.args(["eval", "--mode", "bm25", "--format", "table", "--dataset"]).arg(&data);
    c.arg("--db").arg(dir.path().join("db"));
    let text = String::from_utf8(ok(c).stdout).unwrap();
    let first_metric = text.lines().nth(1).unwrap_or_default();
    assert!(first_metric.trim_start().starts_with("ndcg@10"), "{text}");
    assert!(text.contains("queries") && text.contains("1.0000"), "{text}");
    let mut c = hashed(dir.path());
    c.args(["eval", "--mode", "bm25", "--format", "csv", "--dataset"]).arg(&data);
    c.arg("--db").arg(dir.path().join("db"));
    assert!(fails(c).contains("--format"));
}

#[test]
fn index_prune_deletes_the_documents_of_removed_files() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let search = |db: &Path, q: &str| {
        let mut c = hashed(dir.path());
        c.args(["search", "--mode", "bm25", "--db"]).arg(db).arg(q);
        json(c)["hits"].as_array().unwrap().iter().map(|h| h["id"].clone()).collect::<Vec<_>>()
    };
    for lexical in [false, true] {
        std::fs::create_dir_all(notes.join("sub")).unwrap();
        std::fs::write(notes.join("apples.txt"), "Apples grow on orchard trees.").unwrap();
        std::fs::write(notes.join("sub/bees.md"), "# Bees\nBees make honey from nectar.").unwrap();
        std::fs::write(notes.join("comets.txt"), "Comets have icy tails.").unwrap();
        let db = dir.path().join(format!("db-{lexical}"));
        let index = |corpus: &Path, prune: bool| {
            let mut c = hashed(dir.path());
            c.arg("index").arg(corpus).arg("--db").arg(&db);
            if lexical {
                c.arg("--lexical-only");
            }
            if prune {
                c.arg("--prune");
            }
            c
        };
        ok(index(&notes, false));
        assert_eq!(search(&db, "icy comets"), ["comets.txt"]);
        std::fs::remove_file(notes.join("comets.txt")).unwrap();
        // Without --prune the removed file's document stays; with it, it goes.
        assert_eq!(json(index(&notes, false))["pruned"].as_u64().unwrap_or(0), 0);
        assert_eq!(search(&db, "icy comets"), ["comets.txt"]);
        assert_eq!(json(index(&notes, true))["pruned"], 1, "lexical {lexical}");
        assert!(search(&db, "icy comets").is_empty(), "lexical {lexical}");
        assert_eq!(search(&db, "honey nectar"), ["sub/bees.md"]);
        // An empty corpus would delete everything: refused, nothing deleted.
        let err = fails(index(&empty, true));
        assert!(err.contains("--prune") && err.contains("no document"), "{err}");
        assert_eq!(search(&db, "orchard apples"), ["apples.txt"]);
        // --prune with --limit would delete what --limit left out.
        let mut c = index(&notes, true);
        c.args(["--limit", "1"]);
        assert!(fails(c).contains("--limit"));
    }
}

#[test]
fn a_snippet_shows_the_match_at_the_end_of_a_long_document() {
    let dir = tempfile::tempdir().unwrap();
    let filler = "Flour, water and salt are weighed and mixed by hand. ".repeat(60);
    let long = format!("{filler}At last the dough Rises in the warm kitchen.");
    let corpus = dir.path().join("c.jsonl");
    let lines = [
        serde_json::json!({"_id": "long", "title": "Baking notes", "text": long}),
        serde_json::json!({"_id": "other", "title": "Tides", "text": "The moon pulls the sea."}),
    ];
    std::fs::write(&corpus, lines.map(|l| l.to_string() + "\n").join("")).unwrap();
    for lexical in [false, true] {
        let db = dir.path().join(format!("db-{lexical}"));
        let mut c = hashed(dir.path());
        c.arg("index").arg(&corpus).arg("--db").arg(&db);
        if lexical {
            c.arg("--lexical-only");
        }
        ok(c);
        let mut c = hashed(dir.path());
        c.args(["search", "--mode", "bm25", "--db"]).arg(&db).arg("why does the dough rise");
        let v = json(c);
        assert_eq!(v["score_kind"], "bm25", "{v}");
        let hit = &v["hits"][0];
        assert_eq!(hit["id"], "long", "{v}");
        let snippet = hit["snippet"].as_str().unwrap();
        assert!(snippet.contains("the dough Rises in the warm kitchen."), "{snippet}");
        assert!(snippet.starts_with('…') && snippet.chars().count() <= 242, "{snippet}");
        // Stemmed highlighting of content words: "rise" marks "Rises"; "the" is never marked.
        assert_eq!(hit["highlights"], serde_json::json!(["dough", "Rises"]), "{v}");
    }
}
