//! `engine eval`.
//!
//! `--mode bm25` needs only the lexical index, at `DB/lexical/` (a tantivy folder). If the
//! database has none yet it is built from the dataset's `corpus.jsonl` first, so
//! `engine eval --mode bm25 --db DB --dataset D` works on a fresh folder. Dense and hybrid
//! modes need a database made by `engine index` from the same corpus; queries are embedded
//! with the encoder that built it (NEXT template), in length-sorted batches.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use std::collections::{HashMap, HashSet};

use engine::encoder::TextKind;
use engine::eval::{build_lexical_index, evaluate, run_bm25_eval, BeirDataset};
use engine::fusion::Fusion;
use engine::lexical::LexicalOptions;
use engine::search::{SearchIndex, SearchMode};
use engine::store::Database;

use super::Ctx;

#[derive(Args)]
pub struct EvalArgs {
    /// Database folder (made by `engine index` from the dataset's corpus; for --mode bm25 a
    /// missing BM25 index is built there from the corpus).
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
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

pub fn run(ctx: &Ctx, args: EvalArgs) -> Result<()> {
    let k = args.k.unwrap_or(ctx.config.eval.k);
    if !matches!(args.format.as_str(), "json" | "table") {
        anyhow::bail!("--format must be json or table, got {:?}", args.format);
    }
    match args.mode.as_str() {
        "bm25" => run_bm25(args, k),
        "dense" | "hybrid" => run_dense(ctx, args, k),
        other => anyhow::bail!("--mode must be dense, bm25 or hybrid, got {other:?}"),
    }
}

fn run_bm25(args: EvalArgs, k: usize) -> Result<()> {
    let dataset = BeirDataset::load(&args.dataset, &args.split)?;
    let lexical = engine::search::lexical_dir(&args.db);
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
    let (report, run) = run_bm25_eval(&lexical, &dataset, k)?;
    if let Some(path) = &args.run_out {
        run.write_trec_file(path, "engine-bm25")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    write_per_query(&args, &report)?;
    let mut out = serde_json::to_value(&report)?;
    out["mode"] = "bm25".into();
    print_report(&args, &out)
}

/// Dense or hybrid evaluation over a database built by `engine index`.
fn run_dense(ctx: &Ctx, args: EvalArgs, k: usize) -> Result<()> {
    let mode: SearchMode = args.mode.parse()?;
    let dataset = BeirDataset::load(&args.dataset, &args.split)?;
    let db = Database::open(&args.db, None)
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let manifest = db.manifest();
    let config = super::resolve::config_for_db(ctx, &args.db, &manifest, &args.encoder)?;
    let embedder = super::index::load_embedder(&config)?;
    super::resolve::ensure_same_encoder(
        ctx,
        &args.db,
        &manifest,
        &args.encoder,
        &embedder.fingerprint(),
        &config,
    )?;
    if db.status()?.documents == 0 {
        anyhow::bail!(
            "database {} is empty: run `engine index` on the corpus first",
            args.db.display()
        );
    }
    let stored: HashSet<String> = db.document_ids()?.into_iter().collect();
    let unknown = dataset.unknown_judged_docs(&stored);
    if unknown > 0 {
        eprintln!("warning: {unknown} judged documents are not in the database (indexed from another corpus?)");
    }
    if mode == SearchMode::Hybrid
        && !engine::lexical::LexicalIndex::exists(&engine::search::lexical_dir(&args.db))
    {
        eprintln!("building the BM25 index of {} from its documents", args.db.display());
        engine::search::sync_lexical(&db)?;
    }
    let index = SearchIndex::new(db)?;
    let fusion = Fusion::from_config(&ctx.config.eval)?;
    // All queries in one call: the encoder sorts them by length into full batches.
    let texts: Vec<&str> = dataset.queries.iter().map(|(_, t)| t.as_str()).collect();
    let started = std::time::Instant::now();
    let vectors = embedder.embed(&texts, TextKind::Query)?;
    let encode_seconds = started.elapsed().as_secs_f64();
    let by_text: HashMap<&str, &Vec<f32>> = texts.iter().copied().zip(vectors.iter()).collect();
    let (mut report, run) = evaluate(
        &dataset,
        |text, k| {
            let v = by_text.get(text).map(|v| v.as_slice());
            let hits = index.search(mode, text, v, k, &fusion)?;
            Ok(hits.into_iter().map(|h| (h.id, h.score)).collect())
        },
        k,
    )?;
    report.unknown_judged_docs = Some(unknown);
    if let Some(path) = &args.run_out {
        run.write_trec_file(path, &format!("engine-{}", mode.as_str()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    write_per_query(&args, &report)?;
    let mut out = serde_json::to_value(&report)?;
    out["mode"] = mode.as_str().into();
    out["query_encode_seconds"] = encode_seconds.into();
    print_report(&args, &out)
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
        args.db.display(),
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
        "model": format!("{} {}", args.mode, args.db.display()),
        "data": format!("{} {}", args.dataset.display(), args.split),
        "ndcg10_per_query": ndcg,
        "per_query": report.per_query,
    });
    std::fs::write(path, serde_json::to_string(&out)?)
        .with_context(|| format!("writing {}", path.display()))
}
