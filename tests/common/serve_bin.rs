//! `engine serve` as a child process (the release binary), for tests that kill it; included
//! with `#[path]` by tests/crash_serve.rs and tests/postgres_serve.rs.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `engine --config CFG serve --addr 127.0.0.1:0 TARGET...` (`--db DIR` or
/// `--store URL`); returns the child and its base URL, read from its ready line.
pub fn start(cfg: &Path, target: &[&OsStr]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("--config")
        .arg(cfg)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("engine serve exited before listening").unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break format!("http://{}", rest.split('/').next().unwrap());
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}
