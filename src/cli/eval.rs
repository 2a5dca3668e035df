//! `engine eval`.
//!
//! `--mode bm25` needs only the lexical index, at `DB/lexical/` (a tantivy folder). If the
//! database has none yet it is built from the dataset's `corpus.jsonl` first, so
//! `engine eval --mode bm25 --db DB --dataset D` works on a fresh folder. Dense and hybrid
//! modes arrive with the encoder and ANN index.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use engine::eval::{build_lexical_index, run_bm25_eval, BeirDataset};
use engine::lexical::LexicalOptions;

use super::Ctx;

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.
    #[arg(long)]
    pub dataset: PathBuf,
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
}

pub fn run(ctx: &Ctx, args: EvalArgs) -> Result<()> {
    let k = args.k.unwrap_or(ctx.config.eval.k);
    match args.mode.as_str() {
        "bm25" => run_bm25(args, k),
        "dense" | "hybrid" => anyhow::bail!(
            "eval --mode {}: not implemented yet (needs the dense encoder); --mode bm25 works",
            args.mode
        ),
        other => anyhow::bail!("--mode must be dense, bm25 or hybrid, got {other:?}"),
    }
}

fn run_bm25(args: EvalArgs, k: usize) -> Result<()> {
    let dataset = BeirDataset::load(&args.dataset, &args.split)?;
    let lexical = args.db.join("lexical");
    if !lexical.join("meta.json").exists() {
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
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
