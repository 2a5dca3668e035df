//! `ENGINE__SECTION__KEY` environment overrides through the binary: flags > environment >
//! `--config` file > defaults.

use std::process::Command;

fn embed_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn flags_beat_the_environment_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[model]\npath = \"/no/such/file-model.gguf\"\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let env = [("ENGINE__MODEL__PATH", "/no/such/env-model.gguf")];
    // The file over the defaults.
    let err = embed_error(&["--config", cfg, "embed", "x"], &[]);
    assert!(err.contains("file-model"), "{err}");
    // The environment over the file.
    let err = embed_error(&["--config", cfg, "embed", "x"], &env);
    assert!(err.contains("env-model") && !err.contains("file-model"), "{err}");
    // A flag over the environment.
    let err =
        embed_error(&["--config", cfg, "embed", "--model", "/no/such/flag-model.gguf", "x"], &env);
    assert!(err.contains("flag-model") && !err.contains("env-model"), "{err}");
    // A misspelt key or a bad value is an error naming the variable.
    let err = embed_error(&["embed", "x"], &[("ENGINE__MODEL__PAHT", "/x")]);
    assert!(err.contains("ENGINE__MODEL__PAHT") && err.contains("model.paht"), "{err}");
    let err = embed_error(&["embed", "x"], &[("ENGINE__MODEL__THREADS", "lots")]);
    assert!(err.contains("ENGINE__MODEL__THREADS") && err.contains("integer"), "{err}");
}
