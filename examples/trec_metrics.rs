//! Scores a TREC run file against a qrels file with the engine's metrics and prints JSON, so
//! the metric code can be checked against an independent implementation
//! (`scripts/compare_trec_eval.py` runs this and pytrec_eval on the same files).
//!
//! Usage: `cargo run --release --example trec_metrics -- QRELS RUN [--per-query]`
//! QRELS: BEIR TSV (header, CRLF ok) or TREC qrels. Averages over every judged query; judged
//! queries absent from the run score 0.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_query = args.iter().any(|a| a == "--per-query");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [qrels, run] = files.as_slice() else {
        anyhow::bail!("usage: trec_metrics QRELS RUN [--per-query]");
    };
    let qrels = engine::eval::beir::read_qrels(&PathBuf::from(qrels))?;
    let run = engine::eval::Run::read_trec_file(&PathBuf::from(run))?;
    let report = engine::eval::evaluate_run(&qrels, &run);
    let mut out = serde_json::to_value(&report)?;
    if per_query {
        out["per_query"] = serde_json::to_value(&report.per_query)?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
