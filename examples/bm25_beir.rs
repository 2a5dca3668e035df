//! Builds a BM25 index of a BEIR dataset and evaluates a split: the numbers behind the
//! "BM25 (engine, tantivy)" section of docs/results.md, and the way to compare analyzers.
//!
//! Usage: `cargo run --release --example bm25_beir -- DATASET SPLIT INDEX_DIR [RUN_OUT]
//!         [--analyzer en_stem|en_stem_stop] [--layout flat|multi]`
//! INDEX_DIR must not exist yet (or hold an index, which is then reused as is).

use std::path::PathBuf;

use engine::eval::{build_lexical_index, run_bm25_eval, BeirDataset};
use engine::lexical::{Analyzer, FieldLayout, LexicalIndex, LexicalOptions};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = LexicalOptions::default();
    if let Some(i) = args.iter().position(|a| a == "--analyzer") {
        options.analyzer = args[i + 1].parse::<Analyzer>()?;
        args.drain(i..i + 2);
    }
    if let Some(i) = args.iter().position(|a| a == "--layout") {
        options.layout = match args[i + 1].as_str() {
            "flat" => FieldLayout::Flat,
            "multi" => FieldLayout::MultiField,
            o => anyhow::bail!("layout must be flat or multi, got {o}"),
        };
        args.drain(i..i + 2);
    }
    let (dataset, split, index_dir, run_out) = match args.as_slice() {
        [d, s, i] => (d, s, i, None),
        [d, s, i, r] => (d, s, i, Some(r)),
        _ => anyhow::bail!(
            "usage: bm25_beir DATASET SPLIT INDEX_DIR [RUN_OUT] [--analyzer A] [--layout L]"
        ),
    };
    let ds = BeirDataset::load(&PathBuf::from(dataset), split)?;
    let index_dir = PathBuf::from(index_dir);
    if index_dir.join("meta.json").exists() {
        let idx = LexicalIndex::open(&index_dir)?;
        eprintln!(
            "reusing index {} ({} docs, {:?})",
            index_dir.display(),
            idx.count(),
            idx.options()
        );
    } else {
        let (idx, stats) = build_lexical_index(&ds.corpus_path(), &index_dir, options)?;
        eprintln!(
            "indexed {} docs in {:.2} s ({:?}), {} live",
            stats.documents,
            stats.seconds,
            options,
            idx.count()
        );
    }
    let (report, run) = run_bm25_eval(&index_dir, &ds, 100)?;
    if let Some(path) = run_out {
        run.write_trec_file(&PathBuf::from(path), "engine-bm25")?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
