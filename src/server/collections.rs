//! Collections: several named databases served by one server.
//!
//! The database of `engine serve --db DIR` is the collection named [`DEFAULT_COLLECTION`],
//! answered at the plain routes (`/search`, `/documents`, …) and at `/collections/default/…`.
//! Every other collection is an ordinary engine database folder (so `engine index --db` and
//! `engine search --db` work on it) named after the collection inside the collections root:
//! `server.collections_dir`, or `DB.collections/` beside the default database when that is
//! empty (as `DB.snapshots/` is for snapshots). The server opens every database it finds there
//! when it starts, and `PUT` / `DELETE /collections/{name}` create and remove folders in it.
//!
//! Each database records its encoder (its manifest's fingerprint, model path, pooling and
//! template). Loaded encoders are kept in [`Encoders`], keyed by what loading reads (model path,
//! dtype, device and the `[encoder]` settings): collections with the same key share one model and
//! one batching queue, and an encoder no collection uses any more is unloaded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::batching::{BatchOptions, Batcher};
use super::error::ApiError;
use super::metrics::Metrics;
use super::state::{AppState, Backing, Loaded};
use crate::config::Config;
use crate::encoder::{Embed, Encoder, EncoderOptions};
use crate::error::{Error, Result};
use crate::store::{Database, Manifest};

/// The name of the database given to `engine serve --db`.
pub const DEFAULT_COLLECTION: &str = "default";

/// Longest collection name.
pub const NAME_MAX: usize = 64;

/// Refuses (422 `invalid_collection_name`) a name that is not 1 to [`NAME_MAX`] of
/// `A-Z a-z 0-9 _ -`: names become folder names, so nothing else (no `/`, no `.`) may pass.
pub fn check_name(name: &str) -> std::result::Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "invalid_collection_name",
        format!(
            "collection names are 1 to {NAME_MAX} characters of A-Z, a-z, 0-9, _ and -, got {:?}",
            name.chars().take(80).collect::<String>()
        ),
    ))
}

/// The folder holding the collections of the server whose default database is `db`.
pub fn collections_root(configured: &Path, db: &Path) -> PathBuf {
    if !configured.as_os_str().is_empty() {
        return configured.to_path_buf();
    }
    if db.to_str().is_some_and(crate::store::postgres::is_postgres_url) {
        // A URL has no folder beside it: without `server.collections_dir`, no collections.
        return PathBuf::new();
    }
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("db".into());
    db.with_file_name(format!("{name}.collections"))
}

/// What decides whether two collections can share a loaded encoder: everything
/// [`Encoder::from_config`] reads. The model path is canonicalised, so two spellings of one file
/// share it.
pub fn encoder_key(config: &Config) -> String {
    let path = std::fs::canonicalize(&config.model.path).unwrap_or(config.model.path.clone());
    let m = &config.model;
    let settings = serde_json::to_string(&config.encoder).unwrap_or_default();
    format!("{}|{}|{}|{}|{settings}", path.display(), m.device, m.dtype, m.threads)
}

/// The loaded encoders, each behind its batching queue, shared by the collections that use it.
pub struct Encoders {
    batch: BatchOptions,
    metrics: Arc<Metrics>,
    /// Weak: an encoder goes when the last collection using it does.
    loaded: Mutex<HashMap<String, Weak<Batcher>>>,
}

impl Encoders {
    /// No encoder loaded yet; queues will be made with `batch` and report to `metrics`.
    pub fn new(batch: BatchOptions, metrics: Arc<Metrics>) -> Self {
        Encoders { batch, metrics, loaded: Mutex::default() }
    }

    /// The queue of the encoder `config` names: the loaded one when its [`encoder_key`] matches,
    /// else a newly loaded one (blocking: seconds to minutes).
    pub fn get_or_load(&self, config: &Config) -> Result<Arc<Batcher>> {
        let key = encoder_key(config);
        // Held while loading, so two collections naming one new encoder load it once.
        let mut loaded = self.loaded.lock().map_err(crate::store::poisoned)?;
        if let Some(b) = loaded.get(&key).and_then(Weak::upgrade) {
            return Ok(b);
        }
        let encoder = Arc::new(Encoder::from_config(config)?);
        let batcher = Arc::new(Batcher::start(encoder, self.batch.clone(), self.metrics.clone())?);
        loaded.retain(|_, b| b.strong_count() > 0);
        loaded.insert(key, Arc::downgrade(&batcher));
        Ok(batcher)
    }

    /// The encoders loaded now (what `/status` reports as `encoders_loaded`).
    pub fn all(&self) -> Vec<Arc<Batcher>> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.values().filter_map(Weak::upgrade).collect()
    }
}

/// The configuration that loads the encoder a database records: the server's, with the model
/// path (when it still exists), pooling and template of `manifest`.
pub fn config_for(server: &Config, manifest: &Manifest) -> Config {
    let mut config = server.clone();
    if let Some(path) = manifest.encoder.model_path.as_ref().filter(|p| p.exists()) {
        config.model.path = path.clone();
    }
    // A value this engine does not know (a test embedder's) leaves the server's: the
    // fingerprint check on open refuses an encoder that is not the database's.
    if let Ok(p) = manifest.encoder.pooling.parse() {
        config.encoder.pooling = p;
    }
    if let Ok(t) = manifest.encoder.template.parse() {
        config.encoder.template = t;
    }
    config
}

/// The named collections besides the default one, and the encoders they share.
pub struct Collections {
    /// Set once the server has loaded (see [`collections_root`]).
    root: OnceLock<PathBuf>,
    named: RwLock<BTreeMap<String, Arc<Loaded>>>,
    /// Set with `root`; the default collection's encoder is in it.
    encoders: OnceLock<Arc<Encoders>>,
    /// Creates and deletes run one at a time (a create may load a model for minutes).
    changes: tokio::sync::Mutex<()>,
}

impl Default for Collections {
    fn default() -> Self {
        Collections {
            root: OnceLock::new(),
            named: RwLock::default(),
            encoders: OnceLock::new(),
            changes: tokio::sync::Mutex::new(()),
        }
    }
}

impl Collections {
    /// Opens every database in `root` (a missing root is no collection), sharing `encoders`.
    /// Folders whose names are not collection names (`NAME.snapshots/`, say) are skipped.
    pub fn load(&self, root: PathBuf, server: &Config, encoders: Arc<Encoders>) -> Result<()> {
        let mut named = BTreeMap::new();
        if root.is_dir() {
            for entry in std::fs::read_dir(&root)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let dir = entry.path();
                if !dir.is_dir() || check_name(&name).is_err() || !is_database(&dir) {
                    continue;
                }
                if name == DEFAULT_COLLECTION {
                    tracing::warn!(
                        "{} is not served: the collection named {DEFAULT_COLLECTION} is --db",
                        dir.display()
                    );
                    continue;
                }
                let loaded = open_collection(&dir, server, &encoders).map_err(|e| {
                    Error::InvalidInput(format!("collection {name} ({}): {e}", dir.display()))
                })?;
                named.insert(name, Arc::new(loaded));
            }
        }
        *self.named.write().map_err(crate::store::poisoned)? = named;
        let _ = self.encoders.set(encoders);
        let _ = self.root.set(root);
        Ok(())
    }

    /// The collections root (`None` until loaded).
    pub fn root(&self) -> Option<&Path> {
        self.root.get().map(PathBuf::as_path)
    }

    /// The shared encoders (`None` until loaded).
    pub fn encoders(&self) -> Option<&Arc<Encoders>> {
        self.encoders.get()
    }

    /// A named collection (not the default one).
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.named.read().ok()?.get(name).cloned()
    }

    /// The named collections, by name.
    pub fn list(&self) -> Vec<(String, Arc<Loaded>)> {
        let named = self.named.read().unwrap_or_else(|p| p.into_inner());
        named.iter().map(|(n, l)| (n.clone(), l.clone())).collect()
    }

    /// Serialises creates and deletes.
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// Serves `loaded` as `name` from now on.
    pub fn insert(&self, name: String, loaded: Arc<Loaded>) {
        if let Ok(mut named) = self.named.write() {
            named.insert(name, loaded);
        }
    }

    /// Stops serving `name` (requests already under way keep their handle).
    pub fn remove(&self, name: &str) -> Option<Arc<Loaded>> {
        self.named.write().ok()?.remove(name)
    }
}

/// Whether `dir` holds an engine database: dense, or a `--lexical-only` BM25 index.
pub fn is_database(dir: &Path) -> bool {
    Database::exists(dir) || crate::lexical::LexicalIndex::exists(&crate::store::lexical_dir(dir))
}

/// Opens the database in `dir` with the encoder its manifest records (see [`config_for`]).
pub fn open_collection(dir: &Path, server: &Config, encoders: &Encoders) -> Result<Loaded> {
    let config = if Database::exists(dir) {
        config_for(server, &Database::read_manifest(dir)?)
    } else {
        server.clone()
    };
    super::open_database(dir, &config, encoders)
}

/// `PUT /collections/{name}`: the encoder and index of a new collection; every field defaults
/// to the server's.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A model file or folder name in the server's models folder (the one holding
    /// `model.path`); never a path.
    pub model: Option<String>,
    pub pooling: Option<String>,
    pub template: Option<String>,
    /// `hnsw`, `flat` or `faiss` (when built with it).
    pub backend: Option<String>,
}

impl CreateRequest {
    /// The server configuration with this request's choices, checked (422 on a bad value).
    pub fn config(&self, server: &Config) -> std::result::Result<Config, ApiError> {
        let mut config = server.clone();
        if let Some(model) = &self.model {
            let models = server.model.path.parent().unwrap_or(Path::new("."));
            let plain = !model.is_empty()
                && model != "."
                && model != ".."
                && !model.contains(['/', '\\'])
                && Path::new(model).components().count() == 1;
            let path = models.join(model);
            if !plain || !path.exists() {
                return Err(ApiError::unprocessable(
                    "unknown_model",
                    format!(
                        "model must name a model file or folder in the server's models folder \
                         (beside model.path), got {:?}",
                        model.chars().take(80).collect::<String>()
                    ),
                ));
            }
            config.model.path = path;
        }
        let settings = |e: Error| ApiError::invalid(format!("encoder settings: {e}"));
        if let Some(p) = &self.pooling {
            config.encoder.pooling = p.parse().map_err(settings)?;
        }
        if let Some(t) = &self.template {
            config.encoder.template = t.parse().map_err(settings)?;
        }
        if let Some(b) = &self.backend {
            config.index.backend = b.parse::<crate::index::Backend>()?.compiled_in()?;
        }
        EncoderOptions::from_config(&config).map_err(settings)?;
        Ok(config)
    }
}

/// Makes the database of a new collection in `dir` (which must not exist) with the encoder of
/// `config`; a failure leaves no folder behind.
pub fn create_collection(dir: &Path, config: &Config, encoders: &Encoders) -> Result<Loaded> {
    let made = (|| {
        let batcher = encoders.get_or_load(config)?;
        let opts = crate::store::DbOptions {
            backend: config.index.backend.compiled_in()?,
            params: crate::index::AnnParams::from_config(&config.index),
            chunk_tokens: config.index.chunk_tokens,
            chunk_overlap: config.index.chunk_overlap,
        };
        let db = Database::create_or_open(dir, &batcher.encoder().fingerprint(), &opts)?;
        drop(db);
        super::open_database(dir, config, encoders)
    })();
    if made.is_err() && dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
    made
}

/// Longest wait, when a collection is deleted, for requests still using it to finish.
const DELETE_GRACE: Duration = Duration::from_secs(30);

/// Deletes the folder of a collection no longer served, once the requests using it are done
/// (so sled is closed before its files go). Blocking.
pub fn delete_files(loaded: Arc<Loaded>) -> Result<()> {
    let dir = loaded.path().to_path_buf();
    let started = Instant::now();
    let mut loaded = loaded;
    loop {
        match Arc::try_unwrap(loaded) {
            Ok(only) => {
                drop(only);
                break;
            }
            Err(shared) if started.elapsed() < DELETE_GRACE => {
                loaded = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => {
                tracing::warn!(
                    "collection {} still in use after {DELETE_GRACE:?}; deleting it anyway",
                    dir.display()
                );
                break;
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The database a request addresses: the collection named by the route's `{name}`, or the
/// default collection on the plain routes. 404 for an unknown collection, 503 while loading.
pub struct Collection {
    /// `None` for the default collection.
    pub name: Option<String>,
    pub loaded: Arc<Loaded>,
}

impl FromRequestParts<Arc<AppState>> for Collection {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> std::result::Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        let name = params.iter().find(|(k, _)| *k == "name").map(|(_, v)| v.to_string());
        let loaded = state.ready()?;
        match name {
            None => Ok(Collection { name: None, loaded }),
            Some(n) if n == DEFAULT_COLLECTION => Ok(Collection { name: Some(n), loaded }),
            Some(n) => match state.collections.get(&n) {
                Some(loaded) => Ok(Collection { name: Some(n), loaded }),
                None => Err(ApiError::not_found(format!("no collection named {n:?}"))),
            },
        }
    }
}

/// The route's `{id}` (a document id, percent-decoded), whatever other parameters it has.
pub struct DocId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for DocId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        let id = params.iter().find(|(k, _)| *k == "id").map(|(_, v)| v.to_string());
        id.map(DocId).ok_or_else(|| ApiError::internal("route without an {id}"))
    }
}

/// Whether writes to `loaded` are refused because its folder cannot be written.
pub fn read_only(loaded: &Loaded) -> bool {
    match &loaded.backing {
        Backing::Dense(d) => d.db().read_only(),
        Backing::LexicalOnly { .. } => false,
    }
}
