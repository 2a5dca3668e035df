//! `engine search`: one query, or a queries file in one batch (`--queries`), printed as JSON
//! (hits shaped like the server's), JSON lines, a table or a TREC run, and optionally written
//! to a TREC run file (`--run-out`) that needs no qrels.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::encoder::TextKind;
use engine::eval::run::Run;
use engine::fusion::{Fusion, FusionRequest};
use engine::lexical::LexicalIndex;
use engine::search::{SearchIndex, SearchMode, SearchOptions};
use engine::server::routes::search::{weak_dense_warning, Hit};
use engine::snippet::QueryTerms;
use engine::store::postgres::{redact, PgStore};
use engine::store::{lexical_dir, Database, Store};

use super::location::{self, Location};
use super::resolve::{self, EncoderFlags};
use super::Ctx;

#[derive(Args)]
pub struct SearchArgs {
    /// Database folder (made by `engine index`, with or without --lexical-only).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// PostgreSQL store instead of a folder (made by `engine index --store`; bm25 mode is its
    /// full-text ranking) [default: store.url].
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
    /// Number of hits per query.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// dense | bm25 | hybrid [default: hybrid when the database's encoder was fine-tuned for
    /// retrieval, bm25 when it is an untrained base or the database is lexical-only, dense
    /// without a BM25 index].
    #[arg(long)]
    pub mode: Option<String>,
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// Run every query of this file in one batch: BEIR queries.jsonl (`_id`, `text`; or `id`,
    /// `contents`) or TSV (`qid<TAB>query` per line, Pyserini's topics format).
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    pub queries: Option<PathBuf>,
    /// Write the hits as a TREC run (`qid Q0 docid rank score tag`, tag engine-MODE, the same
    /// as `engine eval --run-out`); no qrels needed.
    #[arg(long, value_name = "FILE")]
    pub run_out: Option<PathBuf>,
    /// json | jsonl | table | trec [default: json for one query; jsonl for --queries, nothing
    /// when --run-out is given].
    #[arg(long)]
    pub format: Option<String>,
    /// Only documents whose metadata passes this filter, in Qdrant's filter JSON, e.g.
    /// '{"must": [{"key": "topic", "match": {"value": "ocean"}}]}' (`match.any`, `range`,
    /// `is_empty`, `should`, `must_not`). Hits then carry their metadata.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Hybrid mode's fusion for this search [default: the config's eval.fusion].
    #[arg(long)]
    pub fusion: Option<engine::fusion::FusionMethod>,
    /// Dense weight of convex fusion in hybrid mode, in [0, 1] (alone, it means --fusion
    /// convex) [default: the config's eval.hybrid_alpha].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// RRF's constant in hybrid mode, 1..=1000 (alone, it means --fusion rrf) [default: the
    /// config's eval.rrf_k].
    #[arg(long)]
    pub rrf_k: Option<usize>,
    /// Drop hits scoring below this, in the mode's own scale (cosine for dense, BM25's for
    /// bm25, the fused score for hybrid).
    #[arg(long, allow_negative_numbers = true)]
    pub score_threshold: Option<f32>,
    /// HNSW search effort (ef) for these searches; ignored by the flat and FAISS backends.
    #[arg(long)]
    pub ef: Option<usize>,
    /// PostgreSQL store: dense search by an exact scan instead of pgvector's HNSW (what HNSW
    /// recall is measured against). An embedded database is exact when built with --backend flat.
    #[arg(long)]
    pub exact: bool,
    /// The query text (or use --queries).
    #[arg(required_unless_present = "queries")]
    pub query: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Jsonl,
    Table,
    Trec,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "json" => Format::Json,
            "jsonl" => Format::Jsonl,
            "table" => Format::Table,
            "trec" => Format::Trec,
            other => bail!("--format must be json, jsonl, table or trec, got {other:?}"),
        })
    }
}

/// What answers the queries: a database (with its encoder when the mode needs one), or a
/// `--lexical-only` database's BM25 index alone.
enum Searcher {
    Full {
        index: Box<SearchIndex>,
        embedder: Option<Box<dyn engine::encoder::Embed>>,
        name: String,
    },
    Lexical(Box<LexicalIndex>),
}

/// One query's answer.
struct Answer {
    qid: String,
    query: String,
    hits: Vec<Hit>,
    took_ms: f64,
    warning: Option<String>,
}

pub fn run(ctx: &Ctx, args: SearchArgs) -> Result<()> {
    let requested: Option<SearchMode> = args.mode.as_deref().map(str::parse).transpose()?;
    let format: Option<Format> = args.format.as_deref().map(str::parse).transpose()?;
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let queries: Vec<(String, String)> = match (&args.queries, &args.query) {
        (Some(file), _) => read_queries(file)?,
        (None, Some(q)) => vec![("1".to_string(), q.clone())],
        (None, None) => bail!("give a QUERY or --queries FILE"),
    };
    if let [(_, q)] = queries.as_slice() {
        if args.queries.is_none() && q.trim().is_empty() {
            bail!("the query is empty");
        }
    }
    let format = format.unwrap_or(match (&args.queries, &args.run_out) {
        (None, _) => Format::Json,
        (Some(_), None) => Format::Jsonl,
        (Some(_), Some(_)) => Format::Jsonl, // printed only when asked for, see below
    });
    let print = args.format.is_some() || args.run_out.is_none() || args.queries.is_none();

    let filter = args.filter.as_deref().map(engine::filter::Filter::parse_str).transpose()?;
    let (searcher, mode) = open(ctx, &args, requested)?;
    if filter.is_some() && matches!(searcher, Searcher::Lexical(_)) {
        bail!("--filter needs a database with metadata; a --lexical-only database has none");
    }
    let fusion_request =
        FusionRequest { fusion: args.fusion, alpha: args.alpha, rrf_k: args.rrf_k };
    if let (Some(field), false) = (fusion_request.first_given(), mode == SearchMode::Hybrid) {
        bail!(
            "--{} applies to hybrid mode only; this search's mode is {} (add --mode hybrid)",
            field.replace('_', "-"),
            mode.as_str()
        );
    }
    let fusion = Fusion::for_request(&ctx.config.eval, &fusion_request)?;
    let opts = |k| SearchOptions {
        k,
        fusion,
        filter: filter.as_ref(),
        score_threshold: args.score_threshold,
        ef: args.ef,
    };
    opts(args.k).check()?;
    let snippet_chars = ctx.config.server.snippet_chars;
    let started = std::time::Instant::now();
    // All queries in one call, as `engine eval` does: the encoder sorts them by length into
    // full batches (and a run's scores then equal eval's).
    let vectors: Vec<Option<Vec<f32>>> = match &searcher {
        Searcher::Full { embedder: Some(e), .. } if mode.needs_vector() => {
            let texts: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
            e.embed(&texts, TextKind::Query)?.into_iter().map(Some).collect()
        }
        _ => vec![None; queries.len()],
    };
    let encode_ms = started.elapsed().as_secs_f64() * 1000.0 / queries.len().max(1) as f64;
    let mut answers = Vec::with_capacity(queries.len());
    for ((qid, query), vector) in queries.into_iter().zip(vectors) {
        let t = std::time::Instant::now();
        let terms = QueryTerms::new(&query);
        let (found, best_dense) = match &searcher {
            Searcher::Full { index, .. } => {
                let r = index.search_with(mode, &query, vector.as_deref(), &opts(args.k))?;
                (r.hits, r.best_dense)
            }
            Searcher::Lexical(lex) => {
                let mut hits = engine::search::search_lexical_only(lex, &query, args.k)?;
                if let Some(t) = args.score_threshold {
                    hits.retain(|h| h.score >= t);
                }
                (hits, None)
            }
        };
        let mut hits = Vec::with_capacity(found.len());
        for h in found {
            let metadata = match (&searcher, &filter) {
                (Searcher::Full { index, .. }, Some(_)) => index
                    .db()
                    .get_document(&h.id)?
                    .map(|d| serde_json::from_str(&d.metadata).unwrap_or(serde_json::Value::Null)),
                _ => None,
            };
            let mut hit = Hit::new(h, &terms, snippet_chars);
            hit.metadata = metadata;
            hits.push(hit);
        }
        let warning = weak_dense_warning(best_dense, ctx.config.server.weak_dense_score);
        let took_ms = t.elapsed().as_secs_f64() * 1000.0 + encode_ms;
        answers.push(Answer { qid, query, hits, took_ms, warning });
    }
    let encoder = match &searcher {
        Searcher::Full { name, .. } => name.clone(),
        Searcher::Lexical(_) => "none".into(),
    };
    let tag = format!("engine-{}", mode.as_str());
    if let Some(path) = &args.run_out {
        to_run(&answers)
            .write_trec_file(path, &tag)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} queries to {}", answers.len(), path.display());
    }
    if print {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        write_answers(&mut out, format, &answers, mode, &encoder, &tag)?;
        out.flush()?;
    }
    Ok(())
}

/// Opens what `--db` names and settles the mode.
fn open(
    ctx: &Ctx,
    args: &SearchArgs,
    requested: Option<SearchMode>,
) -> Result<(Searcher, SearchMode)> {
    let (index, manifest, db_dir) =
        match location::resolve(&ctx.config, args.db.as_ref(), args.store.as_ref())? {
            Location::Postgres(url) => {
                let mut store = PgStore::open(&url, None)
                    .with_context(|| format!("opening the PostgreSQL store {}", redact(&url)))?;
                if args.exact {
                    store.set_exact(true);
                }
                let manifest = store.manifest();
                (SearchIndex::postgres(store), manifest, PathBuf::from(redact(&url)))
            }
            Location::Folder(_) if args.exact => bail!(
                "--exact applies to a PostgreSQL store; an embedded database searches exactly \
                 when indexed with --backend flat"
            ),
            Location::Folder(dir) => match open_folder(&dir, requested)? {
                Ok((index, manifest)) => (index, manifest, dir),
                Err(lexical) => return Ok(lexical),
            },
        };
    let db_dir = &db_dir;
    let mode = requested
        .unwrap_or_else(|| SearchMode::default_for(manifest.encoder.trained, index.has_lexical()));
    // Settings that contradict the database are refused in every mode.
    let config = resolve::config_for_db(ctx, db_dir, &manifest, &args.encoder)?;
    if !mode.needs_vector() {
        return Ok((
            Searcher::Full { index: Box::new(index), embedder: None, name: "none".into() },
            mode,
        ));
    }
    let embedder = super::index::load_embedder(&config)?;
    resolve::ensure_same_encoder(
        ctx,
        db_dir,
        &manifest,
        &args.encoder,
        &embedder.fingerprint(),
        &config,
    )?;
    let name = engine::server::state::encoder_name(&config.model.path);
    Ok((Searcher::Full { index: Box::new(index), embedder: Some(embedder), name }, mode))
}

/// The embedded database in `db_dir` with its manifest, or (`Err`) the searcher of a
/// `--lexical-only` one.
#[allow(clippy::type_complexity)]
fn open_folder(
    db_dir: &Path,
    requested: Option<SearchMode>,
) -> Result<Result<(SearchIndex, engine::store::Manifest), (Searcher, SearchMode)>> {
    if !Database::exists(db_dir) && LexicalIndex::exists(&lexical_dir(db_dir)) {
        // A `--lexical-only` database: BM25 alone, no model.
        let mode = requested.unwrap_or(SearchMode::Bm25);
        if mode != SearchMode::Bm25 {
            bail!(
                "{} was built with --lexical-only: only --mode bm25 works (it has no vectors)",
                db_dir.display()
            );
        }
        let lex = LexicalIndex::open(&lexical_dir(db_dir))?;
        return Ok(Err((Searcher::Lexical(Box::new(lex)), mode)));
    }
    let db = Database::open_to_read(db_dir, None)
        .with_context(|| format!("opening database {}", db_dir.display()))?;
    let manifest = db.manifest();
    Ok(Ok((SearchIndex::open(db, false)?, manifest)))
}

fn to_run(answers: &[Answer]) -> Run {
    let mut run = Run::new();
    for a in answers {
        run.queries.insert(a.qid.clone(), a.hits.iter().map(|h| (h.id.clone(), h.score)).collect());
    }
    run
}

fn write_answers(
    out: &mut impl Write,
    format: Format,
    answers: &[Answer],
    mode: SearchMode,
    encoder: &str,
    tag: &str,
) -> Result<()> {
    let json = |a: &Answer| {
        let mut v = serde_json::json!({
            "query_id": a.qid,
            "query": a.query,
            "hits": a.hits,
            "took_ms": a.took_ms,
            "encoder": encoder,
            "mode": mode,
            "score_kind": mode.score_kind(),
        });
        if let (Some(w), Some(o)) = (&a.warning, v.as_object_mut()) {
            o.insert("warning".into(), w.clone().into());
        }
        v
    };
    match format {
        Format::Json if answers.len() == 1 => {
            let mut v = json(&answers[0]);
            if let Some(o) = v.as_object_mut() {
                o.remove("query_id");
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Format::Json => {
            let all: Vec<_> = answers.iter().map(json).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        }
        Format::Jsonl => {
            for a in answers {
                writeln!(out, "{}", serde_json::to_string(&json(a))?)?;
            }
        }
        Format::Trec => to_run(answers).write_trec(out, tag)?,
        Format::Table => {
            for a in answers {
                writeln!(out, "query {}: {}", a.qid, a.query)?;
                writeln!(out, "{:>4}  {:>10}  {:<24}  title", "rank", mode.score_kind(), "id")?;
                for (i, h) in a.hits.iter().enumerate() {
                    let title: String = h.title.chars().take(60).collect();
                    writeln!(out, "{:>4}  {:>10.4}  {:<24}  {title}", i + 1, h.score, h.id)?;
                }
                if a.hits.is_empty() {
                    writeln!(out, "      (no hits)")?;
                }
                if let Some(w) = &a.warning {
                    writeln!(out, "warning: {w}")?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

/// Reads a queries file: JSONL (BEIR `_id`/`text`, or `id`/`contents`) when its first
/// non-blank line starts with `{`, else TSV `qid<TAB>query`. Order is the file's; a repeated
/// query id is an error (a TREC run holds one ranking per id).
fn read_queries(path: &Path) -> Result<Vec<(String, String)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not valid UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let jsonl = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with('{'));
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let (qid, query) = if jsonl {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: malformed JSON", at()))?;
            let field =
                |names: &[&str]| names.iter().find_map(|n| v.get(*n).filter(|x| !x.is_null()));
            let id = field(&["_id", "id"])
                .with_context(|| format!("{}: no \"_id\" or \"id\" field", at()))?;
            let id = engine::pipeline::corpus::json_id(id)
                .map_err(|m| anyhow::anyhow!("{}: {m}", at()))?;
            let query = field(&["text", "contents"])
                .and_then(|t| t.as_str())
                .with_context(|| format!("{}: no \"text\" or \"contents\" string field", at()))?;
            (id, query.to_string())
        } else {
            let Some((id, query)) = line.split_once('\t') else {
                bail!("{}: expected `qid<TAB>query` (or a JSONL queries file)", at());
            };
            (id.trim().to_string(), query.to_string())
        };
        if qid.is_empty() || qid.chars().any(char::is_whitespace) {
            bail!(
                "{}: query id {qid:?} is empty or has whitespace (a TREC run cannot hold it)",
                at()
            );
        }
        if !seen.insert(qid.clone()) {
            bail!("{}: query id {qid:?} appears twice", at());
        }
        out.push((qid, query));
    }
    if out.is_empty() {
        bail!("{} holds no queries", path.display());
    }
    Ok(out)
}
