//! `engine search`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::encoder::TextKind;
use engine::store::Database;

use super::Ctx;

#[derive(Args)]
pub struct SearchArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Number of hits.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// dense | bm25 | hybrid
    #[arg(long, default_value = "dense")]
    pub mode: String,
    /// GGUF file or model folder (default: model.path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// llama2vec | last | mean (default: encoder.pooling).
    #[arg(long)]
    pub pooling: Option<String>,
    /// The query text.
    pub query: String,
}

pub fn run(ctx: &Ctx, args: SearchArgs) -> Result<()> {
    match args.mode.as_str() {
        "dense" => {}
        // The lexical index plugs in here: bm25 searches it alone, hybrid fuses both rankings
        // (eval.fusion / rrf_k / hybrid_alpha).
        "bm25" | "hybrid" => {
            anyhow::bail!("--mode {}: the BM25 index is not available yet", args.mode)
        }
        other => anyhow::bail!("--mode must be dense, bm25 or hybrid, got {other:?}"),
    }
    if args.query.trim().is_empty() {
        anyhow::bail!("the query is empty");
    }
    let config =
        super::index::with_overrides(&ctx.config, args.model.as_ref(), args.pooling.as_ref(), None);
    let embedder = super::index::load_embedder(&config)?;
    let db = Database::open(&args.db, Some(&embedder.fingerprint()))
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let q = embedder.embed(&[args.query.as_str()], TextKind::Query)?;
    let q = q.into_iter().next().context("encoder returned no vector")?;
    let hits = db.search_dense(&q, args.k)?;
    let hits: Vec<serde_json::Value> = hits
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            serde_json::json!({
                "rank": i + 1,
                "id": h.id,
                "score": h.score,
                "title": h.title,
                "snippet": snippet(&h.passage, config.server.snippet_chars),
            })
        })
        .collect();
    let out = serde_json::json!({ "query": args.query, "mode": args.mode, "hits": hits });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// First `max` characters of `text` with whitespace collapsed, "…" when cut.
fn snippet(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut s: String = flat.chars().take(max).collect();
    s.push('…');
    s
}
