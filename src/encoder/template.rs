//! Llama2Vec prompt templates, pooling choices and the padded batch layout.
//!
//! Prefix, content and suffix are tokenized separately and concatenated (as the reference
//! does), so the special-token positions are known exactly without searching the text.

use candle_core::{DType, Device, Tensor};

use super::model::BatchInputs;
use super::tokenizer::LlmTokenizer;
use super::TextKind;
pub use crate::config::{Padding, Pooling, Template};
use crate::error::{Error, Result};

pub const PREFIX: &str = "\"";
pub const SELF_SUFFIX: &str = "\", summarize the above passage within eight words: ";
pub const NEXT_SUFFIX: &str = "\", predict the following passage within eight words: ";

/// One text turned into model input: its ids and the positions (within `ids`) to pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub pool: Vec<usize>,
    /// Whether the content was cut to the token limit.
    pub truncated: bool,
}

/// The 8 special ids a kind's suffix ends with.
pub fn special_ids(tok: &LlmTokenizer, kind: TextKind) -> &[u32] {
    match kind {
        TextKind::Passage => &tok.special_ids()[..8],
        TextKind::Query => &tok.special_ids()[8..],
    }
}

/// Suffix ids for a kind: the prompt words then the 8 special tokens, tokenized as one string
/// like the reference (so the space before `<s1>` is tokenized as it is there).
pub fn suffix_ids(tok: &LlmTokenizer, kind: TextKind) -> Result<Vec<u32>> {
    let (words, first) = match kind {
        TextKind::Passage => (SELF_SUFFIX, 1),
        TextKind::Query => (NEXT_SUFFIX, 9),
    };
    let text: String = std::iter::once(words.to_string())
        .chain((first..first + 8).map(|i| format!("<s{i}>")))
        .collect();
    let ids = tok.encode(&text)?;
    if ids.len() < 8 || ids[ids.len() - 8..] != *special_ids(tok, kind) {
        return Err(Error::Tokenizer(format!(
            "the {kind:?} suffix does not end in its 8 special tokens: {ids:?}"
        )));
    }
    Ok(ids)
}

/// Tokenizes `text` for `kind` and records the positions to pool.
pub fn prepare(
    tok: &LlmTokenizer,
    text: &str,
    kind: TextKind,
    template: Template,
    pooling: Pooling,
    max_tokens: usize,
) -> Result<Prepared> {
    if text.trim().is_empty() {
        return Err(Error::InvalidInput("cannot embed an empty text".into()));
    }
    if template == Template::None && pooling == Pooling::Llama2Vec {
        return Err(Error::InvalidInput(
            "pooling llama2vec needs template llama2vec (the <sN> tokens come from it)".into(),
        ));
    }
    let mut content = tok.encode(text)?;
    let truncated = content.len() > max_tokens;
    content.truncate(max_tokens);
    let mut ids = tok.leading_ids().to_vec();
    if template == Template::Llama2Vec {
        ids.extend(tok.encode(PREFIX)?);
    }
    let content_start = ids.len();
    ids.extend_from_slice(&content);
    let content_end = ids.len();
    if template == Template::Llama2Vec {
        ids.extend(suffix_ids(tok, kind)?);
    }
    let pool = match pooling {
        Pooling::Llama2Vec => (ids.len() - 8..ids.len()).collect(),
        Pooling::Last => vec![ids.len() - 1],
        Pooling::Mean => (content_start..content_end).collect(),
    };
    Ok(Prepared { ids, pool, truncated })
}

/// Model inputs plus the `[B, 1, T]` pooling weights for a group of prepared texts.
pub struct PaddedBatch {
    pub inputs: BatchInputs,
    pub pool_weights: Tensor,
}

/// Pads a group to its longest member. RoPE positions count from each row's first real token,
/// so a text's embedding does not depend on its batch company or the padding side.
pub fn pad_batch(
    items: &[&Prepared],
    pad_id: u32,
    padding: Padding,
    dtype: DType,
    device: &Device,
) -> Result<PaddedBatch> {
    let t = items.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let b = items.len();
    let mut ids = Vec::with_capacity(b);
    let mut positions = Vec::with_capacity(b);
    let mut valid = Vec::with_capacity(b);
    let mut weights = vec![0f32; b * t];
    for (bi, p) in items.iter().enumerate() {
        let n = p.ids.len();
        let offset = match padding {
            Padding::Left => t - n,
            Padding::Right => 0,
        };
        let mut row = vec![pad_id; t];
        row[offset..offset + n].copy_from_slice(&p.ids);
        let mut pos = vec![0u32; t];
        let mut val = vec![false; t];
        for i in 0..n {
            pos[offset + i] = i as u32;
            val[offset + i] = true;
        }
        let w = 1.0 / p.pool.len() as f32;
        for &i in &p.pool {
            weights[bi * t + offset + i] = w;
        }
        ids.push(row);
        positions.push(pos);
        valid.push(val);
    }
    Ok(PaddedBatch {
        inputs: BatchInputs::causal(&ids, &positions, &valid, dtype, device)?,
        pool_weights: Tensor::from_vec(weights, (b, 1, t), device)?,
    })
}

/// Weighted sum of hidden states `[B, T, H]` by `[B, 1, T]` weights, L2-normalised, in f32.
pub fn pool(hidden: &Tensor, weights: &Tensor) -> Result<Vec<Vec<f32>>> {
    let pooled = weights.matmul(&hidden.to_dtype(DType::F32)?)?.squeeze(1)?;
    let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
    Ok(pooled.broadcast_div(&norm)?.to_vec2::<f32>()?)
}
