//! A fresh PostgreSQL database per test, on the server `ENGINE_TEST_POSTGRES_URL` names
//! (`scripts/postgres.sh start` prints one; `.ci/run` exports it). Without it a test prints
//! "skipped: ..." and passes, except under `CI=true`, where the PostgreSQL tests are required.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable naming the test server (a database on it that the tests may create others from).
pub const ENV_URL: &str = "ENGINE_TEST_POSTGRES_URL";
/// The variable naming a streaming replica of that server (`scripts/postgres.sh replica`).
pub const ENV_REPLICA_URL: &str = "ENGINE_TEST_POSTGRES_REPLICA_URL";

/// A database created for one test and dropped (with its connections) when this is.
pub struct TestDb {
    /// The new database's URL.
    pub url: String,
    admin: String,
    name: String,
}

/// A fresh database for the test `tag`, or `None` (after saying so) when no server is given.
pub fn database(tag: &str) -> Option<TestDb> {
    match std::env::var(ENV_URL) {
        Ok(url) if !url.is_empty() => Some(TestDb::create(&url, tag)),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{ENV_URL} is not set, and CI=true requires the PostgreSQL tests (.ci/run starts a \
             server with scripts/postgres.sh)"
        ),
        _ => {
            eprintln!(
                "skipped: {ENV_URL} is not set (export {ENV_URL}=$(scripts/postgres.sh start) to \
                 run the PostgreSQL tests)"
            );
            None
        }
    }
}

/// The URL of `db` on the streaming replica, or `None` (after saying so) when none is given;
/// required, as the server is, under `CI=true`.
pub fn replica(db: &TestDb) -> Option<String> {
    match std::env::var(ENV_REPLICA_URL) {
        Ok(url) if !url.is_empty() => Some(with_dbname(&url, &db.name)),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{ENV_REPLICA_URL} is not set, and CI=true requires the replica tests")
        }
        _ => {
            eprintln!(
                "skipped: {ENV_REPLICA_URL} is not set (export \
                 {ENV_REPLICA_URL}=$(scripts/postgres.sh replica) to run the replica tests)"
            );
            None
        }
    }
}

/// `url` with its database name replaced by `name` (its query string kept).
pub fn with_dbname(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = main.find("://").map_or(0, |i| i + 3);
    let base = match main[host_start..].find('/') {
        Some(slash) => &main[..host_start + slash],
        None => main,
    };
    format!("{base}/{name}{query}")
}

/// `url` with `options` added: connection-time settings such as `-c key=value`.
pub fn with_options(url: &str, options: &str) -> String {
    let encoded: String = options
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options={encoded}")
}

/// A plain client on `url`, for test setup and checks behind the engine's back.
pub fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

impl TestDb {
    fn create(admin: &str, tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "engine_t_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        )
        .to_lowercase();
        client(admin).batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        TestDb { url: with_dbname(admin, &name), admin: admin.to_string(), name }
    }

    /// A client on this test's database.
    pub fn client(&self) -> postgres::Client {
        client(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped = postgres::Client::connect(&self.admin, postgres::NoTls).and_then(|mut c| {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}
