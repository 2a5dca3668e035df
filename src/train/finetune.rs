//! `engine finetune`: contrastive fine-tuning with InfoNCE (cosine / τ), in-batch negatives and
//! G-1 hard negatives per query mined by the engine itself (BM25 or the current encoder),
//! validated on held-back training queries over a small corpus sample.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::adapt::load_base;
use super::data::{merge_retrieval, read_retrieval, unlabeled_pairs, RetrievalData, TrainQuery};
use super::loss::{embed_with_grad, info_nce_masked};
use super::mine::{dense_search, Bm25};
use super::params::TrainState;
use super::prefix_cache::PrefixCache;
use super::runner::{self, MicroOut};
use super::validate::{evaluate, reduced_corpus, EvalQuery};
use super::{device_name, Hyper, TrainOverrides, TrainingReport};
use crate::config::{Config, HardNegatives};
use crate::encoder::model::Llama;
use crate::encoder::template::{self, Padding, Pooling, Prepared, Template};
use crate::encoder::tokenizer::LlmTokenizer;
use crate::encoder::{Embed, Encoder, EncoderOptions, TextKind};
use crate::error::{Error, Result};
use crate::pipeline::{read_corpus, CorpusOptions};

/// Encoder options for training-time embedding (the method's template and pooling).
fn options(config: &Config, hyper: &Hyper) -> EncoderOptions {
    EncoderOptions {
        pooling: Pooling::Llama2Vec,
        template: Template::Llama2Vec,
        padding: Padding::Left,
        max_query_tokens: hyper.max_query_tokens,
        max_passage_tokens: hyper.max_passage_tokens,
        batch_size: config.encoder.batch_size,
    }
}

/// Per training query, candidate hard negatives: the mined ranks `[skip, skip + depth)` once
/// the query's positives are removed (the top ranks hold unjudged positives), after any
/// negatives the data gave.
fn mine(
    data: &RetrievalData,
    queries: &[TrainQuery],
    hyper: &Hyper,
    method: HardNegatives,
    enc: &Encoder,
) -> Result<Vec<Vec<usize>>> {
    let (skip, depth) = (hyper.hard_negative_skip, hyper.hard_negative_depth);
    let want = |q: &TrainQuery| skip + depth + q.positives.len();
    let ranked: Vec<Vec<usize>> = match method {
        HardNegatives::Bm25 => {
            let bm = Bm25::new(&data.passages);
            queries
                .iter()
                .map(|q| bm.search(&q.text, want(q)))
                .map(|h| h.into_iter().map(|(d, _)| d).collect())
                .collect()
        }
        HardNegatives::Dense => {
            let texts: Vec<&str> = data.passages.iter().map(String::as_str).collect();
            let docs = enc.embed(&texts, TextKind::Passage)?;
            let qt: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
            let qv = enc.embed(&qt, TextKind::Query)?;
            qv.iter()
                .zip(queries)
                .map(|(v, q)| dense_search(v, &docs, want(q)))
                .map(|h| h.into_iter().map(|(d, _)| d).collect())
                .collect()
        }
        HardNegatives::None => vec![vec![]; queries.len()],
    };
    Ok(queries.iter().zip(ranked).map(|(q, r)| negatives_from_ranking(q, r, skip, depth)).collect())
}

/// The given negatives, then ranks `[skip, skip + depth)` of `ranked` without the positives.
pub fn negatives_from_ranking(
    q: &TrainQuery,
    ranked: Vec<usize>,
    skip: usize,
    depth: usize,
) -> Vec<usize> {
    let mut negs = q.negatives.clone();
    for d in ranked.into_iter().filter(|d| !q.positives.contains(d)).skip(skip).take(depth) {
        if !negs.contains(&d) {
            negs.push(d);
        }
    }
    negs
}

/// Every training source as one data set: BEIR folders / triple files, and label-free pairs
/// from corpora without qrels (read by the index's corpus reader).
pub fn read_sources(config: &Config, sources: &TrainSources, seed: u64) -> Result<RetrievalData> {
    let mut parts = Vec::new();
    for p in sources.labeled {
        parts.push(read_retrieval(p)?);
    }
    let opts = CorpusOptions::from_config(&config.index, false);
    for p in sources.unlabeled {
        let corpus = read_corpus(p, &opts)?;
        parts.push(unlabeled_pairs(&corpus.docs, seed)?);
    }
    if parts.is_empty() {
        return Err(Error::InvalidInput(
            "fine-tuning needs training data: --train (BEIR folder or triples) or --unlabeled \
             (a corpus without qrels)"
                .into(),
        ));
    }
    Ok(merge_retrieval(parts))
}

/// Where fine-tuning pairs come from.
#[derive(Debug, Clone, Copy)]
pub struct TrainSources<'a> {
    /// BEIR folders with `qrels/train.tsv`, or JSONL triples.
    pub labeled: &'a [PathBuf],
    /// Corpora without labels: pairs are made from titles and sentences.
    pub unlabeled: &'a [PathBuf],
}

impl TrainSources<'_> {
    fn paths(&self) -> Vec<PathBuf> {
        self.labeled.iter().chain(self.unlabeled).cloned().collect()
    }
}

/// The G passages of one query: a positive, then G-1 negatives (mined ones first, random
/// corpus passages when too few were mined).
fn group(
    q: &TrainQuery,
    negs: &[usize],
    n_passages: usize,
    g: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut out = vec![q.positives[rng.gen_range(0..q.positives.len())]];
    let mut pool: Vec<usize> = negs.to_vec();
    pool.shuffle(rng);
    for d in pool {
        if out.len() == g {
            break;
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    let mut tries = 0;
    while out.len() < g && tries < 100 * g {
        let d = rng.gen_range(0..n_passages);
        if !out.contains(&d) && !q.positives.contains(&d) {
            out.push(d);
        }
        tries += 1;
    }
    out
}

fn prep(tok: &LlmTokenizer, text: &str, kind: TextKind, max: usize) -> Result<Prepared> {
    // An empty passage would be an error at inference; train on a placeholder instead.
    let text = if text.trim().is_empty() { "(empty)" } else { text };
    template::prepare(tok, text, kind, Template::Llama2Vec, Pooling::Llama2Vec, max)
}

/// Runs fine-tuning and writes `out` like `adapt` does.
pub fn run(
    config: &Config,
    model_path: &Path,
    sources: &TrainSources,
    out: &Path,
    overrides: &TrainOverrides,
    resume: bool,
) -> Result<TrainingReport> {
    let hyper = Hyper::resolve(config, overrides)?;
    let data = read_sources(config, sources, hyper.seed)?;
    let base = load_base(config, model_path)?;
    let (model, tok, _) = base.into_parts();
    let opts = options(config, &hyper);
    let enc_of = |m: Llama| Encoder::from_parts(m, tok.clone(), opts.clone(), "training".into());
    // The weights being trained, encoding with the kernel the base was loaded with (re-mining
    // SciFact's corpus in f32 took twice as long as in bf16).
    let packed = model.packed_format();
    let trained_enc = |st: &TrainState| -> Result<Encoder> {
        let mut enc = enc_of(Llama::new(st.config.clone(), st.merged()?)?);
        if let Some(format) = packed {
            enc.enable_packed_kernel(format)?;
        }
        Ok(enc)
    };

    // Held-back validation queries (seeded), never trained on.
    let mut order: Vec<usize> = (0..data.queries.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(hyper.seed ^ 0x7a1));
    let n_val = hyper.validation_queries.min(data.queries.len().saturating_sub(1));
    let val_q: Vec<EvalQuery> = order[..n_val]
        .iter()
        .map(|&i| EvalQuery {
            text: data.queries[i].text.clone(),
            relevant: data.queries[i].positives.iter().map(|&d| (d, 1)).collect::<HashMap<_, _>>(),
        })
        .collect();
    let train_q: Vec<TrainQuery> =
        order[n_val..].iter().map(|&i| data.queries[i].clone()).collect();
    let val_docs = reduced_corpus(data.passages.len(), &val_q, hyper.validation_corpus, hyper.seed);
    tracing::info!(train = train_q.len(), val = val_q.len(), "fine-tuning queries");

    let mined = RefCell::new({
        let enc = enc_of(model.clone());
        mine(&data, &train_q, &hyper, hyper.hard_negatives, &enc)?
    });
    // ANCE-style second round: from half-way on, negatives come from the encoder being trained
    // (after a --resume past half-way, from the resumed one).
    let remine_at = if hyper.mining_rounds >= 2 { hyper.max_steps / 2 } else { usize::MAX };
    let remined = std::cell::Cell::new(false);
    let prefix_cache = RefCell::new(PrefixCache::new(hyper.frozen_cache_mb));
    let state = TrainState::for_run(&model, &hyper, tok.special_ids())?;
    let g = hyper.group_size.min(data.passages.len());
    let pad = tok.pad_id();
    let spec = runner::RunSpec {
        out,
        hyper: &hyper,
        resume,
        stop_after: overrides.stop_after,
        what: "finetune",
    };
    let run = runner::run(
        &spec,
        &state,
        train_q.len(),
        |m, idx, rng, step| {
            if step >= remine_at && !remined.get() {
                let enc = trained_enc(&state)?;
                *mined.borrow_mut() = mine(&data, &train_q, &hyper, HardNegatives::Dense, &enc)?;
                remined.set(true);
                tracing::info!(step, "hard negatives mined again with the current encoder");
            }
            let mined = mined.borrow();
            let mut qs = Vec::with_capacity(idx.len());
            let mut ps = Vec::with_capacity(idx.len() * g);
            let mut docs = Vec::with_capacity(idx.len() * g);
            for &i in idx {
                let q = &train_q[i];
                qs.push(prep(&tok, &q.text, TextKind::Query, hyper.max_query_tokens)?);
                for d in group(q, &mined[i], data.passages.len(), g, rng) {
                    docs.push(d);
                    ps.push(prep(
                        &tok,
                        &data.passages[d],
                        TextKind::Passage,
                        hyper.max_passage_tokens,
                    )?);
                }
            }
            if ps.len() != qs.len() * g {
                return Err(Error::Train("corpus too small for the group size".into()));
            }
            let tokens = qs.iter().chain(&ps).map(|p| p.ids.len()).sum();
            let mut cache = prefix_cache.borrow_mut();
            let qv = embed_with_grad(m, &qs.iter().collect::<Vec<_>>(), pad, Some(&mut cache))?;
            let pv = embed_with_grad(m, &ps.iter().collect::<Vec<_>>(), pad, Some(&mut cache))?;
            // Another query's passage that is relevant to this query is no negative.
            let excluded: Vec<(usize, usize)> = if hyper.mask_false_negatives {
                idx.iter()
                    .enumerate()
                    .flat_map(|(qi, &i)| {
                        let pos = &train_q[i].positives;
                        docs.iter()
                            .enumerate()
                            .filter(|(_, d)| pos.contains(d))
                            .map(move |(j, _)| (qi, j))
                    })
                    .collect()
            } else {
                vec![]
            };
            let loss = info_nce_masked(&qv, &pv, g, hyper.temperature, &excluded)?;
            Ok(MicroOut { parts: vec![("infonce", loss.to_scalar::<f32>()?)], loss, tokens })
        },
        |st, _| {
            if val_q.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            let enc = trained_enc(st)?;
            Ok(serde_json::to_value(evaluate(&enc, &data.passages, &val_docs, &val_q)?)?)
        },
    )?;
    let cache = prefix_cache.borrow();
    if cache.hits + cache.misses > 0 {
        tracing::info!(
            hits = cache.hits,
            misses = cache.misses,
            mb = format!("{:.0}", cache.mb()),
            "frozen-prefix states: texts served from memory"
        );
    }
    crate::encoder::hf::save(out, &state.config, &state.merged()?, &tok)?;
    let (final_losses, validation) = runner::final_records(&run);
    let report = TrainingReport {
        method: crate::encoder::delta::RETRIEVAL_TRAINING_METHOD.into(),
        base_model: model_path.to_path_buf(),
        data: sources.paths(),
        steps: run.step,
        hyper,
        final_losses,
        validation,
        examples: train_q.len(),
        tokens_seen: run.tokens,
        seconds: run.seconds,
        tokens_per_second: run.tokens as f64 / run.seconds.max(1e-9),
        device: device_name(state.device()),
        intended_pooling: Pooling::Llama2Vec,
        intended_template: Template::Llama2Vec,
        note: format!(
            "InfoNCE fine-tuning; embed with pooling llama2vec, template llama2vec (queries \
             NEXT, passages SELF). Validation: {} held-back training queries over {} passages \
             (their positives + a seeded sample).",
            val_q.len(),
            val_docs.len()
        ),
    };
    report.save(out)?;
    Ok(report)
}
