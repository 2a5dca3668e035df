//! `engine adapt`: Llama2Vec unsupervised adaptation (EBAE + EBAR + LM loss) of a base LLM on
//! raw text, written out as a model folder every engine command loads.

use std::path::{Path, PathBuf};

use super::data::{adapt_examples, read_documents};
use super::loss::{adapt_losses, AdaptExample, AdaptLayout};
use super::params::TrainState;
use super::runner::{self, MicroOut};
use super::{device_name, Hyper, TrainOverrides, TrainingReport};
use crate::config::{Config, Pooling, Template};
use crate::encoder::{hf, open_device, Encoder, EncoderOptions};
use crate::error::{Error, Result};

/// Loads the encoder to train (GGUF or folder) in the configured dtype/device; the loader adds
/// the 16 `<sN>` tokens when the base lacks them.
pub fn load_base(config: &Config, model: &Path) -> Result<Encoder> {
    let device = open_device(config.model.device)?;
    Encoder::load_as(model, EncoderOptions::from_config(config)?, config.model.dtype, &device)
}

/// Mean losses of `examples` under the current weights, in batches of `batch`.
fn validation_losses(
    state: &TrainState,
    layout: &AdaptLayout,
    examples: &[AdaptExample],
    batch: usize,
) -> Result<serde_json::Value> {
    if examples.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let model = crate::encoder::model::Llama::new(state.config.clone(), state.merged()?)?;
    let vocab = state.config.vocab_size;
    let (mut total, mut lm, mut ebae, mut ebar, mut n) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&AdaptExample> = chunk.iter().collect();
        let b = layout.batch(&refs, vocab, model.dtype(), model.device())?;
        let l = adapt_losses(&model, &b)?;
        let w = chunk.len() as f64;
        total += l.total.to_scalar::<f32>()? as f64 * w;
        lm += l.lm.to_scalar::<f32>()? as f64 * w;
        ebae += l.ebae.to_scalar::<f32>()? as f64 * w;
        ebar += l.ebar.to_scalar::<f32>()? as f64 * w;
        n += w;
    }
    Ok(serde_json::json!({
        "total": total / n, "lm": lm / n, "ebae": ebae / n, "ebar": ebar / n, "examples": n,
    }))
}

/// Runs adaptation and writes `out` (config.json, model.safetensors, tokenizer.json,
/// training.json, checkpoint/).
pub fn run(
    config: &Config,
    model_path: &Path,
    corpus: &[PathBuf],
    out: &Path,
    overrides: &TrainOverrides,
    resume: bool,
) -> Result<TrainingReport> {
    let hyper = Hyper::resolve(config, overrides)?;
    let docs = read_documents(corpus)?;
    let enc = load_base(config, model_path)?;
    let (model, tok, _) = enc.into_parts();
    let layout = AdaptLayout::new(&tok)?;
    let per_epoch = hyper.max_steps * hyper.batch_size * hyper.grad_accum;
    let want = per_epoch.max(1) + hyper.validation_examples;
    let mut all = adapt_examples(&tok, &docs, hyper.max_seq_tokens, want, hyper.seed)?;
    // Held-out documents: those of the last examples, until enough validation examples.
    let mut val_docs = std::collections::BTreeSet::new();
    let mut count = 0;
    for (d, _) in all.iter().rev() {
        if count >= hyper.validation_examples || val_docs.len() + 1 >= docs.len() {
            break;
        }
        if val_docs.insert(*d) {
            count += all.iter().filter(|(x, _)| x == d).count();
        }
    }
    let (val, train): (Vec<_>, Vec<_>) = all.drain(..).partition(|(d, _)| val_docs.contains(d));
    let val: Vec<AdaptExample> =
        val.into_iter().map(|(_, e)| e).take(hyper.validation_examples).collect();
    let train: Vec<AdaptExample> = train.into_iter().map(|(_, e)| e).collect();
    if train.is_empty() {
        return Err(Error::Train("no training example left after holding out validation".into()));
    }
    tracing::info!(docs = docs.len(), train = train.len(), val = val.len(), "adaptation data");

    let state = TrainState::for_run(&model, &hyper, tok.special_ids())?;
    let vocab = state.config.vocab_size;
    let spec = runner::RunSpec {
        out,
        hyper: &hyper,
        resume,
        stop_after: overrides.stop_after,
        what: "adapt",
    };
    let run = runner::run(
        &spec,
        &state,
        train.len(),
        |m, idx, _rng, _step| {
            let refs: Vec<&AdaptExample> = idx.iter().map(|&i| &train[i]).collect();
            let b = layout.batch(&refs, vocab, m.dtype(), m.device())?;
            let l = adapt_losses(m, &b)?;
            Ok(MicroOut {
                parts: vec![
                    ("loss", l.total.to_scalar::<f32>()?),
                    ("lm", l.lm.to_scalar::<f32>()?),
                    ("ebae", l.ebae.to_scalar::<f32>()?),
                    ("ebar", l.ebar.to_scalar::<f32>()?),
                ],
                loss: l.total,
                tokens: b.tokens,
            })
        },
        |st, _| validation_losses(st, &layout, &val, hyper.batch_size),
    )?;
    hf::save(out, &state.config, &state.merged()?, &tok)?;
    let (final_losses, validation) = runner::final_records(&run);
    let report = TrainingReport {
        method: "adapt".into(),
        base_model: model_path.to_path_buf(),
        data: corpus.to_vec(),
        steps: run.step,
        hyper,
        final_losses,
        validation,
        examples: train.len(),
        tokens_seen: run.tokens,
        seconds: run.seconds,
        tokens_per_second: run.tokens as f64 / run.seconds.max(1e-9),
        device: device_name(state.device()),
        intended_pooling: Pooling::Llama2Vec,
        intended_template: Template::Llama2Vec,
        note: "Llama2Vec EBAE+EBAR adaptation: embed with pooling llama2vec and template \
               llama2vec (queries NEXT, passages SELF). Loss = CE_LM + (EBAE + EBAR)/20; \
               ebae/ebar are logged before the /10."
            .into(),
    };
    report.save(out)?;
    Ok(report)
}
