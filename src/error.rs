//! The library's typed errors. The binary adds context with `anyhow`; the server maps each
//! variant to an HTTP status (see `server::error`).

use std::path::PathBuf;

/// Every failure the library reports. Variants name the layer that failed so callers (CLI,
/// HTTP) can decide how to present it without parsing messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller gave something unusable (empty text, bad flag value, unknown id format...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A document, file or key that was asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A model folder or file is missing, malformed or of an unsupported architecture.
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A corpus or dataset line could not be read.
    #[error("{path}:{line}: {message}")]
    Corpus { path: PathBuf, line: usize, message: String },
    /// Configuration file or values are invalid.
    #[error("config: {0}")]
    Config(String),
    /// The ANN index failed (build, search, persist).
    #[error("index: {0}")]
    Index(String),
    /// The sled store failed or holds data that contradicts the request.
    #[error("store: {0}")]
    Store(String),
    /// Another process (an `engine serve`, an `engine index` run) has the database open: its
    /// store allows one process at a time.
    #[error(
        "database {} is in use by another process{} (a running `engine serve` or `engine index`); \
         query the running server instead (GET /search?q=..., POST /search) or stop it first",
        path.display(),
        pid.map(|p| format!(", pid {p}")).unwrap_or_default()
    )]
    DatabaseInUse {
        /// The database folder.
        path: PathBuf,
        /// The process holding the store's lock, where the system says (Linux `/proc/locks`).
        pid: Option<u32>,
    },
    /// The database's folder cannot be written, and the command or request writes (its store,
    /// sled, opens read-write; searches read such a database through a temporary copy).
    #[error(
        "database {} cannot be written: {reason}; `engine index`, `delete` and the server's \
         document writes need write access to its folder (searches read it through a temporary \
         copy)",
        path.display()
    )]
    DatabaseReadOnly {
        /// The database folder.
        path: PathBuf,
        /// What the file system answered.
        reason: String,
    },
    /// A PostgreSQL store refused a write because it is read-only: a streaming replica (hot
    /// standby) or a connection whose transactions are read-only.
    #[error(
        "store {store} is read-only ({reason}); send writes to the primary server and point \
         read-only servers (searches, document reads) at the replica"
    )]
    StoreReadOnly {
        /// The store's URL, without its password.
        store: String,
        /// What the server answered.
        reason: String,
    },
    /// An existing database was built with another encoder than the one now loaded.
    #[error("encoder mismatch: {0}")]
    EncoderMismatch(String),
    /// The lexical (BM25) index failed.
    #[error("lexical index: {0}")]
    Lexical(String),
    /// Evaluation inputs (queries, qrels, runs) are unusable.
    #[error("eval: {0}")]
    Eval(String),
    /// Training failed (bad data, diverged loss, checkpoint problems).
    #[error("train: {0}")]
    Train(String),
    /// The server is at capacity; retry after about `retry_after_secs`.
    #[error("overloaded: {message}")]
    Overloaded {
        /// What is full.
        message: String,
        /// Suggested delay before retrying, in whole seconds (at least 1).
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Sled(#[from] sled::Error),
    /// The PostgreSQL store failed (connection, query, transaction).
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(#[from] postgres::Error),
}

/// The server's own message (with detail and hint) where there is one: `postgres::Error`
/// alone displays only "db error".
fn postgres_detail(e: &postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), ToString::to_string)
}

impl Error {
    /// [`Error::Model`] for the model at `path`.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model { path: path.into(), message: message.into() }
    }

    /// [`Error::Corpus`] at `line` of `path` (0: the file as a whole).
    pub fn corpus(path: &std::path::Path, line: usize, message: impl Into<String>) -> Self {
        Error::Corpus { path: path.to_path_buf(), line, message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
