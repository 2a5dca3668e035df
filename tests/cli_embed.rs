//! `engine embed` / `engine info` through the binary on a tiny random model: output shape and
//! the bad-input paths (clear message, non-zero exit, no panic).

use std::process::{Command, Output};

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine")).args(args).output().unwrap()
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn embed_prints_one_unit_vector_per_text_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = engine::encoder::testing::write_tiny_model(&dir.path().join("m"), 3).unwrap();
    let m = model.to_str().unwrap();

    let out = engine(&["embed", "--model", m, "--kind", "query", "first text", "second"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["text"], "first text");
    let v = lines[1]["embedding"].as_array().unwrap();
    assert_eq!(v.len(), 64);
    let norm: f64 = v.iter().map(|x| x.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);

    let info = engine(&["info", "--model", m]);
    assert!(info.status.success());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["special_tokens_added"], 16);
    assert_eq!(info["embedding_dim"], 64);

    fails_with(&engine(&["embed", "--model", m, "   "]), "empty");
    fails_with(&engine(&["embed", "--model", "/no/such/model.gguf", "x"]), "not found");
    fails_with(&engine(&["embed", "--model", m, "--kind", "document", "x"]), "query or passage");
    // A bad enumerated flag is the command line's error, listing the values.
    let bad_pooling = engine(&["embed", "--model", m, "--pooling", "max", "x"]);
    fails_with(&bad_pooling, "invalid value 'max' for '--pooling <POOLING>'");
    fails_with(&bad_pooling, "[possible values: llama2vec, last, mean]");
    assert_eq!(bad_pooling.status.code(), Some(2));
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, [b'o', b'k', b'\n', 0xff, 0xfe, b'\n']).unwrap();
    fails_with(
        &engine(&["embed", "--model", m, "--file", bad.to_str().unwrap()]),
        "not valid UTF-8",
    );
    let not_gguf = dir.path().join("x.gguf");
    std::fs::write(&not_gguf, b"definitely not gguf").unwrap();
    fails_with(&engine(&["embed", "--model", not_gguf.to_str().unwrap(), "x"]), "GGUF");
}

#[test]
fn long_text_is_truncated_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = engine::encoder::testing::write_tiny_model(&dir.path().join("m"), 3).unwrap();
    let long = "word ".repeat(400);
    let out = engine(&["embed", "--model", model.to_str().unwrap(), "--kind", "query", &long]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
