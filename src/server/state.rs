//! Shared state of the HTTP handlers. The listener opens before the model and index finish
//! loading (so `/healthz` and `/readyz` answer during a long load), hence [`AppState::loaded`]
//! is filled once, later, and handlers that need it answer 503 until then.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::auth::ApiKeys;
use super::batching::Batcher;
use super::collections::Collections;
use super::error::ApiError;
use super::metrics::{Gauges, Metrics};
use super::tasks::Tasks;
use crate::config::Config;
use crate::encoder::Encoder;
use crate::lexical::LexicalIndex;
use crate::search::{SearchIndex, SearchMode};
use crate::store::{DocRecord, Store};

/// What loading produces: the encoder behind its batching queue and the database with its BM25
/// index, or a `--lexical-only` database's BM25 index alone (no model is loaded for it).
pub struct Loaded {
    /// Display name of the model (file or folder name); "none" for a lexical-only database.
    pub encoder_name: String,
    pub backing: Backing,
}

/// What answers a server's requests.
pub enum Backing {
    Dense(Dense),
    /// A `--lexical-only` database (its BM25 index stores titles and texts): BM25 searches and
    /// document reads; no encoder, so no dense search, embedding or writes.
    LexicalOnly {
        path: PathBuf,
        index: Arc<LexicalIndex>,
    },
}

/// A database with vectors, and its encoder.
pub struct Dense {
    pub batcher: Arc<Batcher>,
    /// The database and its BM25 index (writes go through it so both stay in step).
    pub index: Arc<SearchIndex>,
}

impl Dense {
    pub fn encoder(&self) -> &Arc<Encoder> {
        self.batcher.encoder()
    }

    pub fn db(&self) -> &dyn Store {
        self.index.db()
    }
}

impl Loaded {
    /// The encoder and database, or 422 on a lexical-only database (`what` is refused).
    pub fn dense(&self, what: &str) -> Result<&Dense, ApiError> {
        match &self.backing {
            Backing::Dense(d) => Ok(d),
            Backing::LexicalOnly { path, .. } => Err(ApiError::unprocessable(
                "lexical_only",
                format!(
                    "{what} needs an encoder, and this server serves the --lexical-only database \
                     {} (BM25 search and document reads only)",
                    path.display()
                ),
            )),
        }
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        match &self.backing {
            Backing::Dense(d) => d.db().origin(),
            Backing::LexicalOnly { path, .. } => path,
        }
    }

    /// Whether the database's encoder was fine-tuned for retrieval (false without one).
    pub fn encoder_trained(&self) -> bool {
        match &self.backing {
            Backing::Dense(d) => d.db().manifest().encoder.trained,
            Backing::LexicalOnly { .. } => false,
        }
    }

    /// The mode of a request that names none ([`SearchMode::default_for`]).
    pub fn default_mode(&self) -> SearchMode {
        match &self.backing {
            Backing::Dense(_) => SearchMode::default_for(
                self.encoder_trained(),
                self.modes().contains(&SearchMode::Bm25),
            ),
            Backing::LexicalOnly { .. } => SearchMode::Bm25,
        }
    }

    /// Retrieval modes this server can answer.
    pub fn modes(&self) -> Vec<SearchMode> {
        match &self.backing {
            Backing::Dense(d) => d.index.modes(),
            Backing::LexicalOnly { .. } => vec![SearchMode::Bm25],
        }
    }

    /// A stored document; a lexical-only database has its title and text only.
    pub fn get_document(&self, id: &str) -> crate::Result<Option<DocRecord>> {
        match &self.backing {
            Backing::Dense(d) => d.db().get_document(id),
            Backing::LexicalOnly { index, .. } => {
                Ok(index.stored_text(id)?.map(|(title, text)| DocRecord {
                    title,
                    text,
                    metadata: "null".into(),
                    hash: String::new(),
                    passages: Vec::new(),
                }))
            }
        }
    }

    /// Document and passage counts (passages: none in a lexical-only database).
    pub fn counts(&self) -> crate::Result<(u64, u64)> {
        match &self.backing {
            Backing::Dense(d) => d.db().status().map(|s| (s.documents, s.passages)),
            Backing::LexicalOnly { index, .. } => Ok((index.count(), 0)),
        }
    }
}

pub struct AppState {
    pub config: Config,
    /// The admin and read keys (see `auth`).
    pub keys: ApiKeys,
    pub metrics: Arc<Metrics>,
    pub loaded: OnceLock<Arc<Loaded>>,
    pub started: Instant,
    /// Writes running in the background (`?wait=false`).
    pub tasks: Arc<Tasks>,
    /// The named collections besides the default one (see `collections`).
    pub collections: Collections,
}

impl AppState {
    pub fn new(config: Config, keys: ApiKeys, metrics: Arc<Metrics>) -> Self {
        AppState {
            config,
            keys,
            metrics,
            loaded: OnceLock::new(),
            started: Instant::now(),
            tasks: Arc::default(),
            collections: Collections::default(),
        }
    }

    /// The loaded engine, or 503 while loading.
    pub fn ready(&self) -> Result<Arc<Loaded>, ApiError> {
        self.loaded.get().cloned().ok_or_else(ApiError::not_ready)
    }

    pub fn gauges(&self) -> Gauges {
        let mut g =
            Gauges { queue_capacity: self.config.server.queue_capacity, ..Default::default() };
        if let Some(l) = self.loaded.get() {
            g.ready = true;
            match &l.backing {
                Backing::Dense(d) => {
                    g.queue_depth = d.batcher.depth();
                    if let Ok(s) = d.db().status() {
                        g.documents = s.documents;
                        g.passages = s.passages;
                        g.indexed_vectors = s.indexed;
                    }
                }
                Backing::LexicalOnly { index, .. } => g.documents = index.count(),
            }
        }
        g
    }
}

/// A short name for the model at `path`: its file or folder name.
pub fn encoder_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
