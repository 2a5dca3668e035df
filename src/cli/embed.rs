//! `engine embed` and `engine info`.

use std::path::PathBuf;

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::encoder::{Embed, Encoder, TextKind};
use engine::lexical::LexicalIndex;
use engine::search::SearchMode;
use engine::store::lexical_dir;

use super::resolve::EncoderFlags;
use super::Ctx;

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// query (NEXT template) or passage (SELF template).
    #[arg(long, default_value = "passage")]
    pub kind: String,
    /// Read texts from this file, one per line, in addition to TEXT arguments.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Texts to embed.
    pub texts: Vec<String>,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// Describe this database instead (its manifest: encoder, whether it was trained, the
    /// default search mode, counts); the model is not loaded.
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// Show a PostgreSQL store (made by `engine index --store`) instead: its manifest and counts.
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
}

/// `engine info --store`: a PostgreSQL store's manifest and counts (every mode is available:
/// its full text answers bm25 mode).
fn store_info(url: &str) -> Result<()> {
    use engine::store::postgres::{redact, PgStore};
    use engine::store::Store;
    let store = PgStore::open(url, None)
        .with_context(|| format!("opening the PostgreSQL store {}", redact(url)))?;
    let m = store.manifest();
    let s = store.status()?;
    let trained = m.encoder.trained;
    let info = serde_json::json!({
        "database": redact(url),
        "lexical_only": false,
        "documents": s.documents,
        "passages": s.passages,
        "backend": s.backend,
        "read_only": store.read_only(),
        "chunk_tokens": m.chunk_tokens,
        "chunk_overlap": m.chunk_overlap,
        "encoder": m.encoder,
        "model_path": m.encoder.model_path,
        "encoder_trained": trained,
        "default_mode": SearchMode::default_for(trained, true).as_str(),
        "modes": [SearchMode::Dense.as_str(), SearchMode::Bm25.as_str(), SearchMode::Hybrid.as_str()],
        "lexical_ranking": "postgres full text (ts_rank_cd), not BM25",
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

/// `engine info --db`: the database's manifest (the encoder it loads, whether it was
/// trained, the default search mode, counts), without loading a model or the ANN index.
fn database_info(db: &std::path::Path) -> Result<()> {
    let lexical = lexical_dir(db);
    if !engine::store::Database::exists(db) && LexicalIndex::exists(&lexical) {
        let lex = LexicalIndex::open(&lexical)
            .with_context(|| format!("opening the BM25 index {}", lexical.display()))?;
        let info = serde_json::json!({
            "database": db,
            "lexical_only": true,
            "documents": lex.count(),
            "stores_text": lex.stores_text(),
            "encoder": null,
            "default_mode": SearchMode::Bm25.as_str(),
            "modes": [SearchMode::Bm25.as_str()],
            "note": "built with --lexical-only: BM25 search only, no model is loaded",
        });
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let m = engine::store::Database::read_manifest(db)
        .with_context(|| format!("opening database {}", db.display()))?;
    let trained = m.encoder.trained;
    let bm25 = LexicalIndex::exists(&lexical);
    let mut modes = vec![SearchMode::Dense.as_str()];
    if bm25 {
        modes.extend([SearchMode::Bm25.as_str(), SearchMode::Hybrid.as_str()]);
    }
    let info = serde_json::json!({
        "database": db,
        "lexical_only": false,
        "documents": m.documents,
        "passages": m.passages,
        "backend": m.backend,
        "chunk_tokens": m.chunk_tokens,
        "chunk_overlap": m.chunk_overlap,
        "encoder": m.encoder,
        "model_path": m.encoder.model_path,
        "encoder_trained": trained,
        "default_mode": SearchMode::default_for(trained, bm25).as_str(),
        "modes": modes,
        "note": if trained { "" } else {
            "built with an untrained base encoder: dense search is weak, searches default to bm25"
        },
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

/// Loads the encoder a command's flags name.
pub fn load_encoder(cfg: &engine::config::Config) -> Result<Encoder> {
    Encoder::from_config(cfg)
        .with_context(|| format!("loading the encoder from {}", cfg.model.path.display()))
}

/// One output line of `engine embed` (a struct so "text" comes before "embedding").
#[derive(serde::Serialize)]
struct EmbeddingLine<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

pub fn run_embed(ctx: &Ctx, args: EmbedArgs) -> Result<()> {
    let kind: TextKind = args.kind.parse()?;
    let mut texts = args.texts;
    if let Some(file) = &args.file {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid UTF-8 (at byte {})",
                file.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        texts.extend(text.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    }
    if texts.is_empty() {
        bail!("nothing to embed: give TEXT arguments or --file");
    }
    let encoder = load_encoder(&args.encoder.apply(&ctx.config))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = encoder.embed(&refs, kind)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (text, v) in texts.iter().zip(vectors) {
        serde_json::to_writer(&mut out, &EmbeddingLine { text, embedding: &v })?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn run_info(ctx: &Ctx, args: InfoArgs) -> Result<()> {
    if let Some(db) = &args.db {
        return database_info(db);
    }
    if let Some(url) = &args.store {
        return store_info(url);
    }
    let encoder = load_encoder(&args.encoder.apply(&ctx.config))?;
    let m = encoder.model();
    let c = &m.config;
    let info = serde_json::json!({
        "path": encoder.source(),
        "format": format!("{:?}", encoder.format()),
        "architecture": "llama",
        "parameters": m.num_params(),
        "non_embedding_parameters": c.non_embedding_params(),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "layers": c.num_hidden_layers,
        "attention_heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim(),
        "vocab_size": c.vocab_size,
        "special_tokens_added": encoder.tokenizer().added_special(),
        "special_token_ids": encoder.tokenizer().special_ids(),
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps,
        "context_length": c.max_position_embeddings,
        "tied_embeddings": c.tie_word_embeddings,
        "embedding_dim": encoder.dim(),
        "pooling": encoder.options().pooling,
        "template": encoder.options().template,
        "padding": encoder.options().padding,
        // With a packed kernel the weights stay f32 and the projections run packed (bf16/int8).
        "dtype": match m.packed_format() {
            Some(f) => f.dtype().to_string(),
            None => format!("{:?}", m.dtype()).to_lowercase(),
        },
        "packed_kernel": m.packed_format().map(|f| f.dtype().to_string()),
        "device": if m.device().is_cuda() { "cuda" } else { "cpu" },
        "fingerprint": encoder.fingerprint(),
        "trained_for_retrieval": encoder.trained(),
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
