//! Small-scale retrieval evaluation used by docs/results.md ("Llama2Vec adaptation at small
//! scale"): nDCG@10 / recall of an encoder on a BEIR split over a *reduced* corpus (every
//! document judged for a seeded sample of queries + a seeded sample of other documents), by
//! exact scan. `engine eval` (branch `eval`) is the full evaluator; this exists so the training
//! experiment does not depend on it.
//!
//! cargo run --release --example llama2vec_eval -- MODEL BEIR_DIR SPLIT QUERIES EXTRA_DOCS
//!     MAX_PASSAGE_TOKENS [POOLING [DTYPE]]
//!
//! DTYPE is f32 (default) or bf16 (the AVX-512 BF16 kernel: 2x faster here, cosine to f32
//! >= 0.999 in tests/real_model.rs).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use engine::encoder::{Encoder, EncoderOptions, Padding, Template};
use engine::pipeline::beir::{qrels_rows, read_queries};
use engine::train::data::beir_passages;
use engine::train::validate::{evaluate_per_query, reduced_corpus, EvalQuery, Scores};
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        anyhow::bail!(
            "usage: MODEL BEIR_DIR SPLIT QUERIES EXTRA_DOCS MAX_PASSAGE_TOKENS [POOLING [DTYPE]]"
        );
    }
    let (model, dir, split) = (Path::new(&a[1]), Path::new(&a[2]), &a[3]);
    let (nq, extra, max_p): (usize, usize, usize) = (a[4].parse()?, a[5].parse()?, a[6].parse()?);
    let pooling = a.get(7).map_or("llama2vec", String::as_str).parse()?;
    let dtype = match a.get(8).map_or("f32", String::as_str) {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => anyhow::bail!("DTYPE must be f32 or bf16, got {other:?}"),
    };
    let (ids, docs) = beir_passages(&dir.join("corpus.jsonl"))?;
    let queries = read_queries(&dir.join("queries.jsonl"))?;
    let index: HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
    let mut rel: HashMap<String, HashMap<usize, i64>> = HashMap::new();
    for (q, d, s) in qrels_rows(&dir.join("qrels").join(format!("{split}.tsv")))? {
        if let (Some(&di), true) = (index.get(d.as_str()), s > 0) {
            rel.entry(q).or_default().insert(di, i64::from(s));
        }
    }
    let mut qids: Vec<&String> = rel.keys().filter(|q| queries.contains_key(*q)).collect();
    qids.sort();
    qids.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    qids.truncate(nq);
    let eq: Vec<EvalQuery> = qids
        .iter()
        .map(|q| EvalQuery { text: queries[*q].clone(), relevant: rel[*q].clone() })
        .collect();
    let kept = reduced_corpus(docs.len(), &eq, extra, 7);
    let template = if pooling == engine::encoder::Pooling::Llama2Vec {
        Template::Llama2Vec
    } else {
        Template::None
    };
    let opts = EncoderOptions {
        pooling,
        template,
        padding: Padding::Left,
        max_query_tokens: 64,
        max_passage_tokens: max_p,
        batch_size: 16,
    };
    let t = std::time::Instant::now();
    let enc = Encoder::load(model, opts, dtype, &Device::Cpu)?;
    let per_query = evaluate_per_query(&enc, &docs, &kept, &eq)?;
    let s = Scores::mean(&per_query, kept.len());
    // Per-query nDCG@10 keyed by query id, for scripts/paired_test.py.
    let ndcg_by_query: serde_json::Map<String, serde_json::Value> =
        qids.iter().zip(&per_query).map(|(q, s)| ((*q).clone(), s.ndcg_10.into())).collect();
    println!(
        "{}",
        serde_json::json!({"model": a[1], "data": a[2], "split": split, "pooling": a.get(7), "dtype": a.get(8),
            "scores": s, "ndcg10_per_query": ndcg_by_query, "seconds": t.elapsed().as_secs_f64()})
    );
    Ok(())
}
