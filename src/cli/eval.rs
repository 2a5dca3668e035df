//! `engine eval`.
//!
//! On a database made by `engine index`, every mode searches it exactly as `engine search` and
//! the server do (`SearchIndex::open`, then `SearchIndex::search`); queries are embedded with
//! the encoder that built it (NEXT template), in length-sorted batches. `--mode bm25` also
//! works on a folder with no store: a `--lexical-only` database, or a fresh folder, where the
//! BM25 index is first built from the dataset's `corpus.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use std::collections::{HashMap, HashSet};

use engine::encoder::TextKind;
use engine::eval::{build_lexical_index, evaluate, run_bm25_eval, BeirDataset};
use engine::fusion::Fusion;
use engine::lexical::LexicalOptions;
use engine::search::{SearchIndex, SearchMode};
use engine::store::postgres::{redact, PgStore};
use engine::store::Database;

use super::location::{self, Location};
use super::Ctx;

#[derive(Args)]
pub struct EvalArgs {
    /// Database folder (made by `engine index` from the dataset's corpus; for --mode bm25 a
    /// missing BM25 index is built there from the corpus).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// PostgreSQL store instead of a folder (made by `engine index --store`; bm25 mode is its
    /// full-text ranking, not BM25) [default: store.url].
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.
    #[arg(long)]
    pub dataset: PathBuf,
    /// The qrels split to evaluate (qrels/SPLIT.tsv).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// dense | bm25 | hybrid
    #[arg(long, default_value = "dense")]
    pub mode: String,
    /// Depth of the retrieved run [default: eval.k from the config, 100].
    #[arg(short)]
    pub k: Option<usize>,
    /// Write the run in TREC format (qid Q0 docid rank score tag).
    #[arg(long)]
    pub run_out: Option<PathBuf>,
    /// Write every query's metrics as JSON (`{"ndcg10_per_query": {...}, "per_query": {...}}`,
    /// what scripts/paired_test.py compares).
    #[arg(long, value_name = "FILE")]
    pub per_query_out: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: super::resolve::EncoderFlags,
    /// json (the report as JSON) | table (metrics and counts as aligned text).
    #[arg(long, default_value = "json")]
    pub format: String,
}

pub fn run(ctx: &Ctx, mut args: EvalArgs) -> Result<()> {
    let k = args.k.unwrap_or(ctx.config.eval.k);
    if !matches!(args.format.as_str(), "json" | "table") {
        anyhow::bail!("--format must be json or table, got {:?}", args.format);
    }
    let mode: SearchMode = args.mode.parse()?;
    let dataset = BeirDataset::load(&args.dataset, &args.split)?;
    let location = location::resolve(&ctx.config, args.db.as_ref(), args.store.as_ref())?;
    // From here on `args.db` names the store in messages and reports (a URL without password).
    let index = match location {
        Location::Postgres(url) => {
            args.db = Some(PathBuf::from(redact(&url)));
            let store = PgStore::open(&url, None)
                .with_context(|| format!("opening the PostgreSQL store {}", redact(&url)))?;
            Some(SearchIndex::postgres(store))
        }
        Location::Folder(dir) => {
            args.db = Some(dir);
            None
        }
    };
    let db = db_name(&args);
    if let Some(index) = index {
        run_on_index(ctx, &args, &dataset, mode, k, index)
    } else if Database::exists(db) {
        let db = Database::open_to_read(db, None)
            .with_context(|| format!("opening database {}", db.display()))?;
        let index = SearchIndex::open(db, mode != SearchMode::Dense)?;
        run_on_index(ctx, &args, &dataset, mode, k, index)
    } else if mode == SearchMode::Bm25 {
        run_bm25_without_store(&args, &dataset, k)
    } else {
        anyhow::bail!(
            "no database at {}: run `engine index {} --db {}` first (only --mode bm25 works without one)",
            db.display(),
            args.dataset.display(),
            db.display()
        )
    }
}

/// BM25 over a folder with no store: a `--lexical-only` database, or a fresh folder, where the
/// BM25 index is first built from the dataset's corpus.
fn run_bm25_without_store(args: &EvalArgs, dataset: &BeirDataset, k: usize) -> Result<()> {
    let lexical = engine::store::lexical_dir(db_name(args));
    if !engine::lexical::LexicalIndex::exists(&lexical) {
        eprintln!(
            "no BM25 index at {}; building it from {}",
            lexical.display(),
            dataset.corpus_path().display()
        );
        let (_, stats) =
            build_lexical_index(&dataset.corpus_path(), &lexical, LexicalOptions::default())?;
        eprintln!("indexed {} documents in {:.1} s", stats.documents, stats.seconds);
    }
    let (report, run) = run_bm25_eval(&lexical, dataset, k)?;
    finish(args, SearchMode::Bm25, report, run, serde_json::Map::new())
}

/// The store `args.db` names once [`run`] has resolved it (a folder, or a URL for messages).
fn db_name(args: &EvalArgs) -> &Path {
    args.db.as_deref().unwrap_or(Path::new(""))
}

/// Any mode over a database built by `engine index`, opened as the server and `engine search`
/// open it (`SearchIndex::open`: BM25 is built from the store when missing and repaired when it
/// disagrees with it; a PostgreSQL store as it is), so the three score the same documents alike.
fn run_on_index(
    ctx: &Ctx,
    args: &EvalArgs,
    dataset: &BeirDataset,
    mode: SearchMode,
    k: usize,
    index: SearchIndex,
) -> Result<()> {
    let db = index.db();
    let name = db_name(args);
    let manifest = db.manifest();
    // Settings that contradict the database are refused in every mode, as in `engine search`.
    let config = super::resolve::config_for_db(ctx, name, &manifest, &args.encoder)?;
    if db.status()?.documents == 0 {
        anyhow::bail!(
            "database {} is empty: run `engine index` on the corpus first",
            name.display()
        );
    }
    let stored: HashSet<String> = db.document_ids()?.into_iter().collect();
    let unknown = dataset.unknown_judged_docs(&stored);
    if unknown > 0 {
        eprintln!("warning: {unknown} judged documents are not in the database (indexed from another corpus?)");
    }
    if mode != SearchMode::Dense && !index.has_lexical() {
        anyhow::bail!("the BM25 index of {} could not be built", name.display());
    }
    let mut extra = serde_json::Map::new();
    let mut by_text: HashMap<&str, Vec<f32>> = HashMap::new();
    if mode.needs_vector() {
        let embedder = super::index::load_embedder(&config)?;
        super::resolve::ensure_same_encoder(
            ctx,
            name,
            &manifest,
            &args.encoder,
            &embedder.fingerprint(),
            &config,
        )?;
        // All queries in one call: the encoder sorts them by length into full batches.
        let texts: Vec<&str> = dataset.queries.iter().map(|(_, t)| t.as_str()).collect();
        let started = std::time::Instant::now();
        let vectors = embedder.embed(&texts, TextKind::Query)?;
        extra.insert("query_encode_seconds".into(), started.elapsed().as_secs_f64().into());
        by_text = texts.into_iter().zip(vectors).collect();
    }
    let fusion = Fusion::from_config(&ctx.config.eval)?;
    let (mut report, run) = evaluate(
        dataset,
        |text, k| {
            let v = by_text.get(text).map(|v| v.as_slice());
            let hits = index.search(mode, text, v, k, &fusion)?;
            Ok(hits.into_iter().map(|h| (h.id, h.score)).collect())
        },
        k,
    )?;
    report.unknown_judged_docs = Some(unknown);
    finish(args, mode, report, run, extra)
}

/// Writes `--run-out` and `--per-query-out`, then prints the report with `extra` fields.
fn finish(
    args: &EvalArgs,
    mode: SearchMode,
    report: engine::eval::Report,
    run: engine::eval::Run,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    if let Some(path) = &args.run_out {
        run.write_trec_file(path, &format!("engine-{}", mode.as_str()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    write_per_query(args, &report)?;
    let mut out = serde_json::to_value(&report)?;
    out["mode"] = mode.as_str().into();
    if let Some(obj) = out.as_object_mut() {
        obj.extend(extra);
    }
    print_report(args, &out)
}

/// Prints the report as `--format` asks: JSON, or a table of the metrics and then the counts.
fn print_report(args: &EvalArgs, out: &serde_json::Value) -> Result<()> {
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(out)?);
        return Ok(());
    }
    let Some(obj) = out.as_object() else { anyhow::bail!("report is not a JSON object") };
    println!(
        "{} {} split {} ({} mode)",
        db_name(args).display(),
        args.dataset.display(),
        args.split,
        out["mode"].as_str().unwrap_or("?")
    );
    let (mut metrics, rest): (Vec<_>, Vec<_>) = obj.iter().partition(|(k, _)| k.contains('@'));
    const ORDER: [&str; 5] = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"];
    metrics.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    for (k, v) in metrics {
        println!("  {k:<12} {:.4}", v.as_f64().unwrap_or(f64::NAN));
    }
    for (k, v) in rest {
        if k != "mode" {
            println!("  {k:<30} {v}");
        }
    }
    Ok(())
}

/// `--per-query-out`: each query's metrics, and nDCG@10 alone under the key paired tests read.
fn write_per_query(args: &EvalArgs, report: &engine::eval::Report) -> Result<()> {
    let Some(path) = &args.per_query_out else { return Ok(()) };
    let ndcg: serde_json::Map<String, serde_json::Value> =
        report.per_query.iter().map(|(q, m)| (q.clone(), m.ndcg_10.into())).collect();
    let out = serde_json::json!({
        "model": format!("{} {}", args.mode, db_name(args).display()),
        "data": format!("{} {}", args.dataset.display(), args.split),
        "ndcg10_per_query": ndcg,
        "per_query": report.per_query,
    });
    std::fs::write(path, serde_json::to_string(&out)?)
        .with_context(|| format!("writing {}", path.display()))
}
