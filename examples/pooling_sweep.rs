//! Dense and hybrid quality of every pooling from one encoder pass (docs/results.md, "Dense and
//! hybrid retrieval with the base encoder").
//!
//! With the llama2vec template the three poolings read the same token sequence and differ only
//! in which positions they average, so one forward per passage serves all three: a third of the
//! CPU time of indexing the corpus once per pooling. Passages are cut exactly as `engine index`
//! cuts them (same config keys, title prefixed), documents score by their best passage, retrieval
//! is an exact scan (`--backend flat`), and hybrid is the engine's fusion of the top 100 dense
//! and BM25 hits — the same computation as `engine index` + `engine eval --mode dense|hybrid`.
//!
//! cargo run --release --example pooling_sweep -- CONFIG BEIR_DIR SPLIT [RUN_DIR]

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use engine::config::Config;
use engine::encoder::model::ForwardMode;
use engine::encoder::template::{self, Prepared};
use engine::encoder::{Embed, Encoder, Pooling, TextKind};
use engine::eval::beir::{corpus_docs, BeirDataset, CorpusDoc};
use engine::eval::{build_lexical_index, evaluate_run, Run};
use engine::fusion::Fusion;
use engine::lexical::LexicalOptions;
use engine::pipeline::{chunk, passage_text};

const POOLINGS: [Pooling; 3] = [Pooling::Llama2Vec, Pooling::Last, Pooling::Mean];
const DEPTH: usize = 100;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        anyhow::bail!("usage: CONFIG BEIR_DIR SPLIT [RUN_DIR]");
    }
    let config = Config::load(Some(Path::new(&a[1])))?;
    let (dir, split) = (Path::new(&a[2]), a[3].as_str());
    let run_dir = a.get(4).map(Path::new);
    let encoder = Encoder::from_config(&config)?;
    let opts = encoder.options().clone();
    anyhow::ensure!(
        opts.template == template::Template::Llama2Vec,
        "the sweep needs template llama2vec (all poolings then share one sequence)"
    );
    let dataset = BeirDataset::load(dir, split)?;
    let docs: Vec<CorpusDoc> = corpus_docs(&dataset.corpus_path())?.collect::<Result<_, _>>()?;

    // Passages exactly as the indexing pipeline cuts them.
    let mut passage_doc = Vec::new();
    let mut texts = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        if doc.text.trim().is_empty() && doc.title.trim().is_empty() {
            continue;
        }
        let spans = encoder.token_spans(&doc.text)?;
        for c in
            chunk::split(&doc.text, &spans, config.index.chunk_tokens, config.index.chunk_overlap)
        {
            passage_doc.push(d);
            texts.push(passage_text(&doc.title, &doc.text[c.start..c.end]));
        }
    }
    let start = Instant::now();
    let passages = embed_all(&encoder, &texts, TextKind::Passage, opts.max_passage_tokens)?;
    let passage_secs = start.elapsed().as_secs_f64();
    let tokens = passages.1;
    eprintln!(
        "{} docs, {} passages, {tokens} tokens embedded in {passage_secs:.0} s ({:.0} tok/s)",
        docs.len(),
        texts.len(),
        tokens as f64 / passage_secs
    );
    let query_texts: Vec<String> = dataset.queries.iter().map(|(_, t)| t.clone()).collect();
    let queries = embed_all(&encoder, &query_texts, TextKind::Query, opts.max_query_tokens)?.0;

    let lexical_dir = tempfile::tempdir()?;
    let (lexical, _) =
        build_lexical_index(&dataset.corpus_path(), lexical_dir.path(), LexicalOptions::default())?;
    let fusion = Fusion::from_config(&config.eval)?;
    for (p, pooling) in POOLINGS.iter().enumerate() {
        let mut dense_run = Run::new();
        let mut hybrid_run = Run::new();
        for (qi, (qid, text)) in dataset.queries.iter().enumerate() {
            let dense = exact_top_docs(&queries[p][qi], &passages.0[p], &passage_doc, &docs);
            let bm25 = lexical.search(text, DEPTH)?;
            hybrid_run.queries.insert(qid.clone(), fusion.fuse(&dense, &bm25, DEPTH));
            dense_run.queries.insert(qid.clone(), dense);
        }
        for (mode, run) in [("dense", &dense_run), ("hybrid", &hybrid_run)] {
            let report = evaluate_run(&dataset.qrels, run);
            if let Some(rd) = run_dir {
                let name = format!("{split}-{pooling}-{mode}.run");
                run.write_trec_file(&rd.join(name), "engine")?;
            }
            let mut row = serde_json::to_value(&report)?;
            row["pooling"] = pooling.to_string().into();
            row["mode"] = mode.into();
            println!("{row}");
        }
    }
    eprintln!("total {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Embeddings of `texts` under every pooling (`[pooling][text]`) from one forward per batch,
/// plus the number of tokens run through the model.
fn embed_all(
    encoder: &Encoder,
    texts: &[String],
    kind: TextKind,
    max_tokens: usize,
) -> anyhow::Result<(Vec<Vec<Vec<f32>>>, usize)> {
    let opts = encoder.options();
    let prepared: Vec<[Prepared; 3]> = texts
        .iter()
        .map(|t| {
            let one = |pooling| {
                template::prepare(encoder.tokenizer(), t, kind, opts.template, pooling, max_tokens)
            };
            Ok([one(POOLINGS[0])?, one(POOLINGS[1])?, one(POOLINGS[2])?])
        })
        .collect::<anyhow::Result<_>>()
        .context("tokenizing")?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prepared[i][0].ids.len()));
    let mut out = vec![vec![Vec::new(); texts.len()]; POOLINGS.len()];
    let tokens = prepared.iter().map(|p| p[0].ids.len()).sum();
    let progress = indicatif::ProgressBar::new(texts.len() as u64);
    for group in order.chunks(opts.batch_size.max(1)) {
        let model = encoder.model();
        let pad = |p: usize| {
            let items: Vec<&Prepared> = group.iter().map(|&i| &prepared[i][p]).collect();
            template::pad_batch(
                &items,
                encoder.tokenizer().pad_id(),
                opts.padding,
                model.dtype(),
                model.device(),
            )
        };
        let batches = [pad(0)?, pad(1)?, pad(2)?];
        let hidden = model.forward(&batches[0].inputs, ForwardMode::Fast)?;
        for (p, batch) in batches.iter().enumerate() {
            for (&i, v) in group.iter().zip(template::pool(&hidden, &batch.pool_weights)?) {
                out[p][i] = v;
            }
        }
        progress.inc(group.len() as u64);
    }
    progress.finish_and_clear();
    Ok((out, tokens))
}

/// Top documents by their best passage's cosine (embeddings are unit length).
fn exact_top_docs(
    query: &[f32],
    passages: &[Vec<f32>],
    passage_doc: &[usize],
    docs: &[CorpusDoc],
) -> Vec<(String, f32)> {
    let mut best: HashMap<usize, f32> = HashMap::new();
    for (v, &d) in passages.iter().zip(passage_doc) {
        let s: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
        let e = best.entry(d).or_insert(f32::NEG_INFINITY);
        *e = e.max(s);
    }
    let mut ranked: Vec<(String, f32)> =
        best.into_iter().map(|(d, s)| (docs[d].id.clone(), s)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(DEPTH);
    ranked
}
