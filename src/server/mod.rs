//! `engine serve`: the HTTP API and the web UI, on axum + tokio.
//!
//! Layering follows text-embeddings-inference: [`routes`](mod@routes) (the router's handlers: validation and
//! JSON) sit on [`batching`] (the queue and the one encoder thread that owns the model's forward
//! passes) and the database; [`error`] gives every failure one JSON shape, [`metrics`] and
//! [`openapi`] describe the server, [`assets`] holds the UI. [`collections`] serves several
//! databases side by side: `--db` as the collection `default`, others under
//! `/collections/{name}`, sharing loaded encoders.

pub mod assets;
pub mod auth;
pub mod batching;
pub mod bench;
pub mod collections;
pub mod cors;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod tasks;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use self::batching::BatchOptions;
use self::collections::Encoders;
use self::error::{error_body, ApiError};
use self::metrics::Metrics;
use self::state::{encoder_name, AppState, Backing, Dense, Loaded};
use crate::config::Config;
pub use crate::config::LogFormat;
use crate::encoder::Embed;
use crate::error::{Error, Result};
use crate::fusion::Fusion;
use crate::lexical::LexicalIndex;
use crate::search::SearchIndex;
use crate::store::{lexical_dir, Database};

/// What `engine serve` needs besides the listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: Config,
    /// Database folder (made by `engine index`), or a PostgreSQL store's URL
    /// (`postgres://...`, made by `engine index --store`).
    pub db: PathBuf,
    /// The admin key: when set, writes and the embedding routes require it (see `auth`).
    pub api_key: Option<String>,
    /// The read key: when set (with `api_key`), reads need one of the two keys.
    pub read_api_key: Option<String>,
}

/// Writes one of the server's own lines (`event`: listening, ready, request) on stderr: `text`
/// as is, or in JSON with `fields`.
pub fn log_line(
    config: &crate::config::ServerConfig,
    event: &str,
    text: &str,
    fields: serde_json::Value,
) {
    if config.log_format != LogFormat::Json {
        eprintln!("{text}");
        return;
    }
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut line =
        serde_json::json!({ "ts": ts, "level": "INFO", "event": event, "message": text });
    if let (Some(o), serde_json::Value::Object(f)) = (line.as_object_mut(), fields) {
        o.extend(f);
    }
    eprintln!("{line}");
}

/// The routes of one database, answered for the default collection at these paths and for
/// every collection under `/collections/{name}` (see `collections`).
pub const DATABASE_ROUTES: &[(&str, &str)] = &[
    ("post", "/search"),
    ("get", "/search"),
    ("get", "/documents/{id}"),
    ("post", "/documents"),
    ("get", "/documents"),
    ("post", "/documents/delete"),
    ("delete", "/documents/{id}"),
    ("patch", "/documents/{id}"),
    ("get", "/fields"),
    ("get", "/status"),
    ("post", "/snapshots"),
];

/// The routes besides [`DATABASE_ROUTES`].
pub const SERVER_ROUTES: &[(&str, &str)] = &[
    ("get", "/tasks/{id}"),
    ("post", "/embed"),
    ("post", "/v1/embeddings"),
    ("get", "/v1/models"),
    ("get", "/info"),
    ("get", "/health"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/collections"),
    ("get", "/collections/{name}"),
    ("put", "/collections/{name}"),
    ("delete", "/collections/{name}"),
];

/// The prefix of a named collection's [`DATABASE_ROUTES`].
pub const COLLECTION_PREFIX: &str = "/collections/{name}";

/// Every route, as (method, path template): the router below and the OpenAPI document must
/// both cover exactly these (a test checks).
pub fn routes() -> Vec<(&'static str, String)> {
    let database = |prefix: &'static str| {
        DATABASE_ROUTES.iter().map(move |&(m, p)| (m, format!("{prefix}{p}")))
    };
    let server = SERVER_ROUTES.iter().map(|&(m, p)| (m, p.to_string()));
    database("").chain(database(COLLECTION_PREFIX)).chain(server).collect()
}

/// The routes of [`DATABASE_ROUTES`] with their paths under `prefix` ("" for the default
/// collection).
fn database_routes(prefix: &str) -> Router<Arc<AppState>> {
    use routes::{documents, search};
    let at = |p: &str| format!("{prefix}{p}");
    Router::new()
        .route(&at("/search"), post(search::post_search).get(search::get_search))
        .route(&at("/documents"), post(documents::add_documents).get(documents::list_documents))
        .route(
            &at("/documents/delete"),
            post(documents::delete_many)
                .get(documents::named_delete::get)
                .delete(documents::named_delete::delete)
                .patch(documents::named_delete::patch),
        )
        .route(
            &at("/documents/{*id}"),
            get(documents::get_document)
                .delete(documents::delete_document)
                .patch(documents::patch_document),
        )
        .route(&at("/fields"), get(routes::fields::fields))
        .route(&at("/status"), get(routes::status))
        .route(&at("/snapshots"), post(routes::snapshots::create_snapshot))
}

/// Builds the router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let mut app = Router::new()
        .merge(database_routes(""))
        .merge(database_routes(COLLECTION_PREFIX))
        .route("/collections", get(routes::collections::list))
        .route(
            "/collections/{name}",
            get(routes::collections::info)
                .put(routes::collections::create)
                .delete(routes::collections::delete),
        )
        .route("/tasks/{id}", get(routes::documents::get_task))
        .route("/embed", post(routes::embed::embed))
        .route("/v1/embeddings", post(routes::openai::embeddings))
        .route("/v1/models", get(routes::openai::models))
        .route("/info", get(routes::embed::info))
        .route("/health", get(routes::embed::health))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi));
    for &(path, file) in assets::FILES {
        app = app.route(path, get(move || async move { assets::serve(file) }));
    }
    let app = app
        .fallback(|| async { ApiError::not_found("no such route") })
        // axum's own 2 MB default would cut in before the configured limit.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(state.config.server.request_timeout_secs.max(1)),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe));
    // Outside `observe`, so every response, JSON errors included, carries the CORS headers;
    // the origins were checked when serving began.
    let app = match cors::layer(&state.config.server.cors_origins) {
        Ok(Some(cors)) => app.layer(cors),
        _ => app,
    };
    app
        // Failures worth an error line are logged where they happen (ApiError::internal); a 503
        // from /readyz while loading is not one.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .with_state(state)
}

/// Records per-route metrics and turns any non-JSON error (405 from the router, 413 from the
/// body-limit layer) into the API's JSON error shape.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().replace("{*id}", "{id}"))
        .unwrap_or_else(|| "unmatched".into());
    let path = state.config.server.log_requests.then(|| req.uri().path().to_string());
    let mut res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        res = json_error_for(res).await;
    }
    state.metrics.observe_request(&method, &route, status.as_u16(), started.elapsed());
    if let Some(path) = path {
        // The request log (`server.log_requests`, `engine serve --log-requests`): the path
        // without its query string, so query texts stay out of the log.
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = status.as_u16();
        let fields =
            serde_json::json!({ "method": method, "path": path, "status": status, "ms": ms });
        log_line(
            &state.config.server,
            "request",
            &format!("{method} {path} {status} {ms:.1} ms"),
            fields,
        );
    }
    res
}

async fn json_error_for(res: Response) -> Response {
    let status = res.status();
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = serde_json::to_vec(&error_body(status, code, &message)).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Loads the encoder and the database and starts the encoder thread (blocking: minutes for a
/// large model); a `--lexical-only` database loads its BM25 index alone, without any model.
pub fn load(opts: &ServeOptions, metrics: Arc<Metrics>) -> Result<Loaded> {
    let encoders = Encoders::new(BatchOptions::from_config(&opts.config.server)?, metrics);
    load_with(opts, &encoders)
}

/// [`load`], taking the encoder from (or adding it to) `encoders`.
fn load_with(opts: &ServeOptions, encoders: &Encoders) -> Result<Loaded> {
    // Fusion settings are checked here, so a bad `[eval]` stops the server at load rather than
    // failing every hybrid search; each search builds its own (`Fusion::for_request`).
    Fusion::from_config(&opts.config.eval)?;
    BatchOptions::from_config(&opts.config.server)?;
    open_database(&opts.db, &opts.config, encoders)
}

/// Opens the database in `dir` (or the PostgreSQL store its text names) with the encoder
/// `config` names, loaded through `encoders` (shared with the collections that name the same
/// one).
fn open_database(dir: &std::path::Path, config: &Config, encoders: &Encoders) -> Result<Loaded> {
    let url = dir.to_str().filter(|s| crate::store::postgres::is_postgres_url(s));
    let lexical = lexical_dir(dir);
    if url.is_none() && !Database::exists(dir) && LexicalIndex::exists(&lexical) {
        let index = Arc::new(LexicalIndex::open(&lexical)?);
        if !index.stores_text() {
            return Err(Error::InvalidInput(format!(
                "{} is a BM25 index without titles and texts (made before lexical-only databases \
                 stored them); run `engine index --lexical-only` into a new folder",
                dir.display()
            )));
        }
        let backing = Backing::LexicalOnly { path: dir.to_path_buf(), index };
        return Ok(Loaded { encoder_name: "none".into(), backing });
    }
    let batcher = encoders.get_or_load(config)?;
    // The database must have been built by this very encoder (fingerprint check). One whose
    // folder cannot be written is served from a temporary copy that refuses writes.
    let fingerprint = batcher.encoder().fingerprint();
    let index = match url {
        // Several servers may share it; one on a replica serves reads and refuses writes.
        Some(url) => {
            SearchIndex::postgres(crate::store::postgres::PgStore::open(url, Some(&fingerprint))?)
        }
        // BM25 is rebuilt first when missing or out of step with the store (tantivy indexes
        // thousands of documents a second: little next to loading the model).
        None => SearchIndex::open(Database::open_to_read(dir, Some(&fingerprint))?, true)?,
    };
    let status = index.db().status()?;
    tracing::info!(
        database = %dir.display(),
        documents = status.documents,
        passages = status.passages,
        backend = %status.backend,
        "database opened"
    );
    let index = Arc::new(index);
    Ok(Loaded {
        encoder_name: encoder_name(&config.model.path),
        backing: Backing::Dense(Dense { batcher, index }),
    })
}

/// Loads the default database, then every collection in the collections root (see
/// `collections`), into `state`.
fn load_all(opts: &ServeOptions, state: &AppState, metrics: Arc<Metrics>) -> Result<Loaded> {
    let encoders =
        Arc::new(Encoders::new(BatchOptions::from_config(&opts.config.server)?, metrics));
    let loaded = load_with(opts, &encoders)?;
    let root = collections::collections_root(&opts.config.server.collections_dir, &opts.db);
    state.collections.load(root, &opts.config, encoders)?;
    Ok(loaded)
}

/// The line `engine serve` prints once loaded: where it listens and what it loaded.
pub fn ready_line(addr: Option<std::net::SocketAddr>, loaded: &Loaded, seconds: f64) -> String {
    let addr = addr.map(|a| format!("http://{a}/")).unwrap_or_else(|| "?".into());
    let modes: Vec<&str> = loaded.modes().iter().map(|m| m.as_str()).collect();
    let (contents, encoder) = match &loaded.backing {
        Backing::Dense(d) => {
            let (documents, passages, backend) = match d.db().status() {
                Ok(s) => (s.documents, s.passages, s.backend.to_string()),
                Err(_) => (0, 0, "?".into()),
            };
            let trained =
                if loaded.encoder_trained() { "trained for retrieval" } else { "untrained base" };
            let read_only = if d.db().read_only() { ", read-only" } else { "" };
            (
                format!("{documents} documents, {passages} passages, {backend} index{read_only}"),
                format!("encoder {} ({trained})", loaded.encoder_name),
            )
        }
        Backing::LexicalOnly { index, .. } => (
            format!("{} documents, lexical-only BM25 index", index.count()),
            "no encoder".to_string(),
        ),
    };
    format!(
        "engine serve: ready at {addr} after {seconds:.1} s: {} ({contents}), {encoder}, modes {} \
         (default {})",
        loaded.path().display(),
        modes.join(", "),
        loaded.default_mode().as_str()
    )
}

/// Serves on `listener` until `shutdown` completes, then lets in-flight requests finish, stops
/// the encoder thread and saves the index. The model and database load in the background;
/// a load failure stops the server and is returned.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let keys = auth::ApiKeys::new(opts.api_key.as_deref(), opts.read_api_key.as_deref())?;
    cors::layer(&opts.config.server.cors_origins)?;
    let state = Arc::new(AppState::new(opts.config.clone(), keys, metrics.clone()));
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<Error>();
    let loader_state = state.clone();
    let local = listener.local_addr().ok();
    let loader = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        match load_all(&opts, &loader_state, metrics) {
            Ok(loaded) => {
                tracing::info!(
                    seconds = t.elapsed().as_secs_f64(),
                    "model and index loaded; ready"
                );
                let line = ready_line(local, &loaded, t.elapsed().as_secs_f64());
                let fields = serde_json::json!({
                    "address": local.map(|a| a.to_string()),
                    "database": loaded.path(),
                    "encoder": loaded.encoder_name,
                    "modes": loaded.modes(),
                    "seconds": t.elapsed().as_secs_f64(),
                });
                log_line(&loader_state.config.server, "ready", &line, fields);
                let _ = loader_state.loaded.set(Arc::new(loaded));
            }
            Err(e) => {
                let _ = fail_tx.send(e);
            }
        }
    });
    let failed = Arc::new(std::sync::Mutex::new(None::<Error>));
    let failed_w = failed.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down: finishing in-flight requests"),
            Ok(e) = fail_rx => {
                tracing::error!("loading failed: {e}");
                if let Ok(mut f) = failed_w.lock() { *f = Some(e); }
            }
        }
    };
    let app = router(state.clone());
    let server = state.config.server.clone();
    serve_connections(listener, app, &server, stop).await;
    let _ = loader.await;
    if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    if let Some(loaded) = state.loaded.get() {
        let loaded = loaded.clone();
        let state = state.clone();
        tokio::task::spawn_blocking(move || finish(&loaded, &state))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    }
    Ok(())
}

/// Longest wait for in-flight requests once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// The accept loop (axum's `serve` without its unbounded defaults): at most
/// `max_connections` sockets (more are closed at accept, so `/healthz` keeps answering under a
/// flood), and hyper's header timer, which also closes keep-alive sockets idle for
/// `header_timeout_secs`. On `stop` it stops accepting and lets open connections finish.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    server: &crate::config::ServerConfig,
    stop: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    // HTTP/1 only: the HTTP/1-or-2 sniffing of hyper-util's auto builder reads the first
    // bytes before any header timer runs, so a silent socket would be held for ever.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(server.header_timeout_secs.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(server.max_connections.max(1)));
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("connection limit reached; closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            |r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
        ));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

/// After the last request: stop the encoder threads, persist the indexes of every collection.
fn finish(loaded: &Loaded, state: &AppState) -> Result<()> {
    let mut all = vec![loaded];
    let named = state.collections.list();
    all.extend(named.iter().map(|(_, l)| l.as_ref()));
    for l in &all {
        if let Backing::Dense(d) = &l.backing {
            d.batcher.close();
        }
    }
    for l in all {
        if let Backing::Dense(d) = &l.backing {
            if !d.db().read_only() {
                d.db().save_index()?;
            }
        }
    }
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Blocking entry for the CLI: binds `addr`, serves until SIGINT/SIGTERM.
pub fn run_blocking(addr: &str, opts: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::InvalidInput(format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        tracing::info!("listening on http://{local}/");
        log_line(
            &opts.config.server,
            "listening",
            &format!(
                "engine serve: http://{local}/ (loading model and index; /readyz turns 200 when \
                 ready)"
            ),
            serde_json::json!({ "address": local.to_string() }),
        );
        serve(listener, opts, shutdown_signal()).await
    })
}
