//! The encoder: a Llama-architecture LLM turned into a text embedder with the Llama2Vec
//! prompts (SELF for passages, NEXT for queries) and pooling over the special `<sN>` tokens.
//!
//! Layers: `gguf`/`hf` load weights and tokenizer, `model` is the differentiable Llama forward,
//! `template` builds the prompted token sequences and pools hidden states into vectors,
//! and [`Encoder`] ties them together behind the [`Embed`] trait the rest of the engine uses.
//! The CPU kernels under `model`: `gemm` (packed bf16 / int8 products, SwiGLU in the bf16
//! kernel's epilogue, and the bf16 products of training), `attention` (the packed layers'
//! attention from the fused q/k/v output, RoPE included, on the bf16 kernel), `fused` (softmax,
//! SwiGLU, cross-entropy rows in one pass) and `fused_grad` (RMSNorm, RoPE, SwiGLU with their
//! own backward, for the trainable layers).

use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod attention;
pub mod bench;
pub mod delta;
pub mod fused;
pub mod fused_grad;
pub mod gemm;
pub mod gguf;
pub mod hf;
pub mod model;
pub mod template;
pub mod testing;
mod text_encoder;
pub mod tokenizer;

pub use template::{Padding, Pooling, Prepared, Template};
pub use text_encoder::{load_weights, open_device, Encoder, EncoderOptions, ModelFormat};

/// Whether a text is embedded as a query (NEXT template) or a passage (SELF template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    Query,
    Passage,
}

impl std::str::FromStr for TextKind {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "query" => Ok(TextKind::Query),
            "passage" => Ok(TextKind::Passage),
            other => Err(crate::error::Error::InvalidInput(format!(
                "kind must be query or passage, got {other:?}"
            ))),
        }
    }
}

/// Identifies an encoder exactly enough that vectors from two encoders with equal fingerprints
/// are comparable. Stored in every index manifest.
///
/// Equality compares the identity (hash, pooling, template, dim, trained), not
/// [`EncoderFingerprint::model_path`]: the same model copied elsewhere is the same encoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderFingerprint {
    /// Hash of the model files (see `text_encoder::model_hash`).
    pub model_hash: String,
    pub pooling: String,
    pub template: String,
    pub dim: usize,
    /// Fine-tuned for retrieval (false for a base model: its dense ranking is weak, so
    /// searches default to BM25).
    #[serde(default)]
    pub trained: bool,
    /// Where the model was loaded from (absolute) when the fingerprint was taken, so that a
    /// database can load its encoder again without flags. Absent for in-memory and test
    /// encoders and in databases written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<std::path::PathBuf>,
}

impl PartialEq for EncoderFingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.model_hash == other.model_hash
            && self.pooling == other.pooling
            && self.template == other.template
            && self.dim == other.dim
            && self.trained == other.trained
    }
}

impl Eq for EncoderFingerprint {}

/// What the indexing pipeline, the server and evaluation need from an embedder. The real
/// implementation is [`Encoder`]; tests may use smaller ones.
pub trait Embed: Send + Sync {
    /// Output dimension.
    fn dim(&self) -> usize;
    fn fingerprint(&self) -> EncoderFingerprint;
    /// L2-normalised embeddings, one per text, in order.
    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<f32>>>;
    /// Byte spans `(start, end)` of the tokens of `text` (no template), used to split long
    /// documents into passages of a bounded number of tokens.
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>>;
    /// Most content tokens of a passage the embedder reads before truncating (no limit by
    /// default): passages are cut to fit it with their title.
    fn max_passage_tokens(&self) -> usize {
        usize::MAX
    }
    /// The work of every forward pass so far (zero for embedders that do not count it): what
    /// indexing reports as tokens/s and padding waste.
    fn forward_stats(&self) -> ForwardStats {
        ForwardStats::default()
    }
}

/// Cumulative work of an embedder's forward passes. Take two readings and subtract
/// ([`ForwardStats::since`]) to measure a stretch of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ForwardStats {
    /// Texts embedded.
    pub sequences: u64,
    /// Tokens of those texts, template included: the model's real work.
    pub tokens: u64,
    /// Padding positions the batches added on top of `tokens`.
    pub padding: u64,
    /// Wall time inside forward passes (tokenizing excluded).
    pub seconds: f64,
}

impl ForwardStats {
    /// The work done between `earlier` and `self`.
    pub fn since(&self, earlier: &ForwardStats) -> ForwardStats {
        ForwardStats {
            sequences: self.sequences - earlier.sequences,
            tokens: self.tokens - earlier.tokens,
            padding: self.padding - earlier.padding,
            seconds: self.seconds - earlier.seconds,
        }
    }

    /// Real tokens per second of forward time.
    pub fn tokens_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Share of the computed positions that were padding.
    pub fn padding_share(&self) -> f64 {
        let all = self.tokens + self.padding;
        if all > 0 {
            self.padding as f64 / all as f64
        } else {
            0.0
        }
    }
}
