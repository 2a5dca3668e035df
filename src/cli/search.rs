//! `engine search`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::encoder::TextKind;
use engine::fusion::Fusion;
use engine::lexical::LexicalIndex;
use engine::search::{lexical_dir, SearchIndex, SearchMode};
use engine::store::Database;

use super::Ctx;

#[derive(Args)]
pub struct SearchArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Number of hits.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// dense | bm25 | hybrid (default: dense when the database's encoder was fine-tuned for
    /// retrieval, bm25 when it is an untrained base).
    #[arg(long)]
    pub mode: Option<String>,
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
    let requested: Option<SearchMode> = args.mode.as_deref().map(str::parse).transpose()?;
    if args.query.trim().is_empty() {
        anyhow::bail!("the query is empty");
    }
    let config =
        super::index::with_overrides(&ctx.config, args.model.as_ref(), args.pooling.as_ref(), None);
    let fusion = Fusion::from_config(&config.eval)?;
    let lexical_only = !Database::exists(&args.db) && LexicalIndex::exists(&lexical_dir(&args.db));
    if lexical_only {
        // A `--lexical-only` database: BM25 alone, ids and scores.
        let mode = requested.unwrap_or(SearchMode::Bm25);
        if mode != SearchMode::Bm25 {
            anyhow::bail!(
                "{} was built with --lexical-only: only --mode bm25 works",
                args.db.display()
            );
        }
        let lex = LexicalIndex::open(&lexical_dir(&args.db))?;
        let hits: Vec<serde_json::Value> = lex
            .search(&args.query, args.k)?
            .into_iter()
            .enumerate()
            .map(|(i, (id, score))| serde_json::json!({"rank": i + 1, "id": id, "score": score}))
            .collect();
        let out = serde_json::json!({ "query": args.query, "mode": mode.as_str(), "hits": hits });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let embedder = super::index::load_embedder(&config)?;
    let db = Database::open(&args.db, Some(&embedder.fingerprint()))
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let index = SearchIndex::open(db, false)?;
    let mode = requested.unwrap_or_else(|| {
        SearchMode::default_for(index.db().manifest().encoder.trained, index.lexical().is_some())
    });
    let q = if mode.needs_vector() {
        let q = embedder.embed(&[args.query.as_str()], TextKind::Query)?;
        Some(q.into_iter().next().context("encoder returned no vector")?)
    } else {
        None
    };
    let hits = index.search(mode, &args.query, q.as_deref(), args.k, &fusion)?;
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
    let out = serde_json::json!({ "query": args.query, "mode": mode.as_str(), "hits": hits });
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
