//! `engine index`, `engine delete`, `engine check`.

use std::path::PathBuf;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use engine::config::Config;
use engine::encoder::Embed;
use engine::index::{AnnParams, Backend};
use engine::pipeline::{self, CorpusOptions, IndexOptions};
use engine::store::postgres::{redact, PgStore};
use engine::store::{Database, DbOptions, Store};

use super::location::{self, Location};
use super::resolve::EncoderFlags;
use super::Ctx;

/// Test hook: use the library's hashed bag-of-words embedder of this dimension instead of a
/// model, so CLI tests run without model files. Never set it in production.
const ENV_HASH_ENCODER: &str = "ENGINE_TEST_HASH_ENCODER";
/// Test hook: sleep this many milliseconds after each embedded batch (lets a test kill an
/// indexing run mid-way).
const ENV_SLOW_BATCH: &str = "ENGINE_TEST_SLOW_BATCH_MS";

#[derive(Args)]
pub struct IndexArgs {
    /// BEIR folder (corpus.jsonl), a .jsonl file (BEIR `_id`/`title`/`text` or Pyserini
    /// `id`/`contents` records), or a folder of .txt/.md files.
    pub corpus: PathBuf,
    /// Database folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// PostgreSQL store instead of a folder: postgres://user@host:port/dbname (tables created
    /// if missing; pgvector needed) [default: store.url].
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
    /// The ANN index [default: index.backend].
    #[arg(long)]
    pub backend: Option<Backend>,
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// Skip bad records (malformed JSONL lines, conflicting repeated ids, unreadable files or
    /// folders; each reported with file and line) instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Treat an id that already exists with different content as an update (else an error).
    #[arg(long)]
    pub update: bool,
    /// Build only the BM25 index (no encoder run).
    #[arg(long)]
    pub lexical_only: bool,
    /// After indexing, report recall@10 of the ANN index against an exact scan.
    #[arg(long)]
    pub verify: bool,
    /// Index only the first N documents of the corpus (a quick trial on a large collection).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Also delete the stored documents the corpus no longer holds (files removed from a
    /// folder corpus, records removed from a JSONL file), so the database mirrors the corpus.
    #[arg(long, conflicts_with = "limit")]
    pub prune: bool,
    /// JSONL field holding the document id [default: index.id_field, "_id"; records without
    /// it may use Pyserini's "id"].
    #[arg(long, value_name = "NAME")]
    pub id_field: Option<String>,
    /// JSONL field holding the title [default: index.title_field, "title"].
    #[arg(long, value_name = "NAME")]
    pub title_field: Option<String>,
    /// JSONL field holding the text [default: index.text_field, "text"; records without it
    /// may use Pyserini's "contents"].
    #[arg(long, value_name = "NAME")]
    pub text_field: Option<String>,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Database folder (made by `engine index`).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// PostgreSQL store instead of a folder [default: store.url].
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
    /// Document ids to delete.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Database folder (made by `engine index`, with or without --lexical-only).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// PostgreSQL store instead of a folder: recall@10 of pgvector's HNSW against an exact scan
    /// [default: store.url].
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
    /// Number of sampled stored vectors used as queries.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
}

/// The encoder named by the configuration (or the test embedder, see [`ENV_HASH_ENCODER`]).
pub(super) fn load_embedder(config: &Config) -> Result<Box<dyn Embed>> {
    if let Ok(dim) = std::env::var(ENV_HASH_ENCODER) {
        let dim: usize = dim.parse().with_context(|| format!("{ENV_HASH_ENCODER}={dim:?}"))?;
        return Ok(Box::new(pipeline::testing::HashEmbedder::new(dim)));
    }
    Ok(Box::new(super::embed::load_encoder(config)?))
}

/// The stored ids `--prune` deletes: those the corpus no longer holds. Refused when the corpus
/// holds nothing (pruning would empty the database) or some of its entries could not be read
/// (their documents would be deleted although their files remain).
fn stale_ids(stored: Vec<String>, corpus: &pipeline::Corpus, dir: &str) -> Result<Vec<String>> {
    if corpus.docs.is_empty() {
        anyhow::bail!(
            "--prune: the corpus holds no document, so pruning would delete all of {dir}; \
             nothing was deleted"
        );
    }
    if !corpus.skipped.is_empty() {
        anyhow::bail!(
            "--prune: {} corpus entries could not be read (listed above), and pruning would \
             delete their documents; fix them or index without --prune",
            corpus.skipped.len()
        );
    }
    let present: std::collections::HashSet<&str> =
        corpus.docs.iter().map(|d| d.id.as_str()).collect();
    Ok(stored.into_iter().filter(|id| !present.contains(id.as_str())).collect())
}

/// Reads the corpus `engine index` names, with its field-name flags, `--limit` and a warning
/// when it holds no document.
fn read_corpus(config: &Config, args: &IndexArgs) -> Result<pipeline::Corpus> {
    let mut opts = CorpusOptions::from_config(&config.index, args.skip_bad);
    opts.update = args.update;
    for (flag, field) in [
        (&args.id_field, &mut opts.id_field),
        (&args.title_field, &mut opts.title_field),
        (&args.text_field, &mut opts.text_field),
    ] {
        if let Some(f) = flag {
            *field = f.clone();
        }
    }
    let mut corpus = pipeline::read_corpus(&args.corpus, &opts)
        .with_context(|| format!("reading corpus {}", args.corpus.display()))?;
    for e in &corpus.skipped {
        eprintln!("skipped: {e}");
    }
    if let Some(n) = args.limit {
        corpus.docs.truncate(n);
    }
    if corpus.docs.is_empty() {
        let what = match corpus.format {
            pipeline::CorpusFormat::Files => "no .txt or .md file",
            _ => "no document",
        };
        eprintln!(
            "warning: the corpus {} holds {what}; nothing was indexed",
            args.corpus.display()
        );
    }
    Ok(corpus)
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} passages {per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub fn run_index(ctx: &Ctx, args: IndexArgs) -> Result<()> {
    let location = location::resolve(&ctx.config, args.db.as_ref(), args.store.as_ref())?;
    let dir = match location {
        Location::Folder(dir) if args.lexical_only => return run_lexical_only(ctx, &args, &dir),
        Location::Postgres(_) if args.lexical_only => anyhow::bail!(
            "--lexical-only builds a BM25 folder; a PostgreSQL store indexes its full text itself"
        ),
        Location::Postgres(url) => return run_index_postgres(ctx, &args, &url),
        Location::Folder(dir) => dir,
    };
    let (config, db_opts, corpus, embedder) = prepare(ctx, &args)?;
    let db = Database::create_or_open(&dir, &embedder.fingerprint(), &db_opts)
        .with_context(|| format!("opening database {}", dir.display()))?;
    let opts = index_options(&config, &args)?;
    // Decided before any write: a refused prune leaves the database as it was.
    let name = dir.display().to_string();
    let stale =
        if args.prune { Some(stale_ids(db.document_ids()?, &corpus, &name)?) } else { None };
    let bar = progress_bar();
    // The BM25 index mirrors the store; rebuilding it is seconds beside the embedding.
    let started = std::time::Instant::now();
    let prune = stale.unwrap_or_default();
    let (report, lexical) =
        engine::search::index_with_bm25(&db, embedder.as_ref(), corpus.docs, &prune, &opts, &bar)
            .with_context(|| format!("indexing into {}", dir.display()))?;
    let pruned = prune.len();
    let lexical_seconds = (started.elapsed().as_secs_f64() - report.seconds).max(0.0);
    let verify = if args.verify { Some(db.verify_recall(200, 10, 42)?) } else { None };
    let lexical_report = serde_json::json!({
        "documents": lexical.count(),
        "seconds": lexical_seconds,
    });
    let out = serde_json::json!({
        "report": report,
        "pruned": pruned,
        "lexical": lexical_report,
        "bad_lines_skipped": corpus.skipped.len(),
        "status": db.status()?,
        "verify": verify,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// What `engine index` starts from on either store: the configuration with the flags applied,
/// the database settings (and the backend wanted for an existing one), the corpus, the encoder.
fn prepare(
    ctx: &Ctx,
    args: &IndexArgs,
) -> Result<(Config, DbOptions, pipeline::Corpus, Box<dyn Embed>)> {
    let mut config = args.encoder.apply(&ctx.config);
    config.index.backend = args.backend.unwrap_or(config.index.backend);
    let backend = config.index.backend.compiled_in()?;
    let corpus = read_corpus(&config, args)?;
    let embedder = load_embedder(&config)?;
    let db_opts = DbOptions {
        backend,
        params: AnnParams::from_config(&config.index),
        chunk_tokens: config.index.chunk_tokens,
        chunk_overlap: config.index.chunk_overlap,
    };
    Ok((config, db_opts, corpus, embedder))
}

/// The indexing loop's settings: the config's, `--update`, and the slow-batch test hook.
fn index_options(config: &Config, args: &IndexArgs) -> Result<IndexOptions> {
    let mut opts = IndexOptions::from_config(config);
    opts.update = args.update;
    if let Ok(ms) = std::env::var(ENV_SLOW_BATCH) {
        let ms: u64 = ms.parse().with_context(|| format!("{ENV_SLOW_BATCH}={ms:?}"))?;
        opts.batch_delay = Some(Duration::from_millis(ms));
    }
    Ok(opts)
}

/// `engine index --store URL`: the same pipeline into PostgreSQL, one transaction per
/// committed window; full text is indexed by PostgreSQL as rows are written (no BM25 build).
fn run_index_postgres(ctx: &Ctx, args: &IndexArgs, url: &str) -> Result<()> {
    let (config, db_opts, corpus, embedder) = prepare(ctx, args)?;
    let name = redact(url);
    let store = PgStore::create_or_open(url, &embedder.fingerprint(), &db_opts)
        .with_context(|| format!("opening the PostgreSQL store {name}"))?;
    let opts = index_options(&config, args)?;
    let prune =
        if args.prune { stale_ids(store.document_ids()?, &corpus, &name)? } else { Vec::new() };
    let report =
        pipeline::index_documents(&store, embedder.as_ref(), corpus.docs, &opts, &progress_bar())
            .with_context(|| format!("indexing into {name}"))?;
    store.delete_documents(&prune)?;
    let verify = if args.verify { Some(store.verify_recall(200, 10, 42)?) } else { None };
    let status = store.status()?;
    let out = serde_json::json!({
        "report": report,
        "pruned": prune.len(),
        "lexical": { "documents": status.documents, "ranking": "postgres full text (ts_rank_cd)" },
        "bad_lines_skipped": corpus.skipped.len(),
        "status": status,
        "verify": verify,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn run_delete(ctx: &Ctx, args: DeleteArgs) -> Result<()> {
    let index = match location::resolve(&ctx.config, args.db.as_ref(), args.store.as_ref())? {
        Location::Postgres(url) => engine::search::SearchIndex::postgres(
            PgStore::open(&url, None)
                .with_context(|| format!("opening the PostgreSQL store {}", redact(&url)))?,
        ),
        Location::Folder(dir) => {
            let db = Database::open(&dir, None)
                .with_context(|| format!("opening database {}", dir.display()))?;
            // Opened like a search: BM25 left behind by an interrupted write is repaired first,
            // so this write, which ends by clearing the marker, cannot hide that repair.
            engine::search::SearchIndex::open(db, false)?
        }
    };
    let missing = index.delete_documents(&args.ids)?;
    let db = index.db();
    db.save_index()?;
    for id in &missing {
        eprintln!("not found: {id}");
    }
    let deleted = args.ids.iter().collect::<std::collections::HashSet<_>>().len() - missing.len();
    let out =
        serde_json::json!({ "deleted": deleted, "not_found": missing, "status": db.status()? });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn run_check(ctx: &Ctx, args: CheckArgs) -> Result<()> {
    let dir = match location::resolve(&ctx.config, args.db.as_ref(), args.store.as_ref())? {
        Location::Folder(dir) => dir,
        Location::Postgres(url) => {
            let store = PgStore::open(&url, None)
                .with_context(|| format!("opening the PostgreSQL store {}", redact(&url)))?;
            let r = store.verify_recall(args.queries, 10, 42)?;
            let out = serde_json::json!({ "recall_at_10": r.recall, "check": r, "status": store.status()? });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
    };
    let lexical = engine::store::lexical_dir(&dir);
    if !Database::exists(&dir) && engine::lexical::LexicalIndex::exists(&lexical) {
        // A `--lexical-only` database: no vectors to check, only that BM25 opens and answers.
        let lex = engine::lexical::LexicalIndex::open(&lexical)
            .with_context(|| format!("opening the BM25 index {}", lexical.display()))?;
        lex.search("check", 1)?;
        let out = serde_json::json!({
            "lexical_only": true,
            "documents": lex.count(),
            "stores_text": lex.stores_text(),
            "recall_at_10": null,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let db = Database::open_to_read(&dir, None)
        .with_context(|| format!("opening database {}", dir.display()))?;
    let r = db.verify_recall(args.queries, 10, 42)?;
    let out = serde_json::json!({ "recall_at_10": r.recall, "check": r, "status": db.status()? });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `engine index --lexical-only`: only the BM25 index (no encoder run), in `DB/lexical/`.
fn run_lexical_only(ctx: &Ctx, args: &IndexArgs, db_dir: &std::path::Path) -> Result<()> {
    use engine::lexical::{LexicalDoc, LexicalIndex, LexicalOptions};
    let started = std::time::Instant::now();
    let corpus = read_corpus(&ctx.config, args)?;
    if engine::store::Database::exists(db_dir) {
        anyhow::bail!(
            "{} is a dense database; its BM25 index is kept up to date by `engine index` without --lexical-only",
            db_dir.display()
        );
    }
    // The BM25 index is the whole database here: it also stores titles and texts, for hits.
    let dir = engine::store::lexical_dir(db_dir);
    let lex = if LexicalIndex::exists(&dir) {
        LexicalIndex::open(&dir)?
    } else {
        LexicalIndex::create_with_text(&dir, LexicalOptions::default())?
    };
    let docs: Vec<_> = corpus
        .docs
        .iter()
        .filter(|d| !(d.title.trim().is_empty() && d.text.trim().is_empty()))
        .collect();
    let empty = corpus.docs.len() - docs.len();
    let stale = if args.prune {
        stale_ids(lex.ids()?, &corpus, &db_dir.display().to_string())?
    } else {
        Vec::new()
    };
    lex.add(docs.iter().map(|d| LexicalDoc { id: &d.id, title: &d.title, text: &d.text }))?;
    lex.delete(stale.iter().map(String::as_str))?;
    lex.commit()?;
    lex.reload()?;
    let out = serde_json::json!({
        "lexical_only": true,
        "documents": lex.count(),
        "pruned": stale.len(),
        "empty_skipped": empty,
        "bad_lines_skipped": corpus.skipped.len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
