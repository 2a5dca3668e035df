//! Shared state of the HTTP handlers. The listener opens before the model and index finish
//! loading (so `/healthz` and `/readyz` answer during a long load), hence [`AppState::loaded`]
//! is filled once, later, and handlers that need it answer 503 until then.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::auth::ApiKeys;
use super::batching::Batcher;
use super::error::ApiError;
use super::metrics::{Gauges, Metrics};
use super::tasks::Tasks;
use crate::config::Config;
use crate::encoder::{Embed, Encoder};
use crate::search::{SearchIndex, SearchMode};
use crate::store::Database;

/// What loading produces: the encoder behind its batching queue and the database with its BM25
/// index.
pub struct Loaded {
    pub batcher: Arc<Batcher>,
    /// Display name of the model (file or folder name).
    pub encoder_name: String,
    /// The database and its BM25 index (writes go through it so both stay in step).
    pub index: Arc<SearchIndex>,
}

impl Loaded {
    pub fn encoder(&self) -> &Arc<Encoder> {
        self.batcher.encoder()
    }

    pub fn dim(&self) -> usize {
        self.encoder().dim()
    }

    /// Whether the database's encoder was fine-tuned for retrieval.
    pub fn encoder_trained(&self) -> bool {
        self.db().manifest().encoder.trained
    }

    /// The mode of a request that names none ([`SearchMode::default_for`]).
    pub fn default_mode(&self) -> SearchMode {
        SearchMode::default_for(self.encoder_trained(), self.modes().contains(&SearchMode::Bm25))
    }

    pub fn db(&self) -> &Database {
        self.index.db()
    }

    /// Retrieval modes this server can answer.
    pub fn modes(&self) -> Vec<SearchMode> {
        self.index.modes()
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
            g.queue_depth = l.batcher.depth();
            if let Ok(s) = l.db().status() {
                g.documents = s.documents;
                g.passages = s.passages;
                g.indexed_vectors = s.indexed;
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
