//! The encoder: a Llama-architecture LLM turned into a text embedder with the Llama2Vec
//! prompts (SELF for passages, NEXT for queries) and pooling over the special `<sN>` tokens.
//!
//! Layers: `gguf`/`hf` load weights and tokenizer, `model` is the differentiable Llama forward,
//! `template` builds the prompted token sequences and pools hidden states into vectors,
//! and [`Encoder`] ties them together behind the [`Embed`] trait the rest of the engine uses.

use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod bench;
pub mod bf16_gemm;
pub mod delta;
pub mod fused;
pub mod gguf;
pub mod hf;
pub mod model;
pub mod template;
pub mod testing;
mod text_encoder;
pub mod tokenizer;

pub use template::{Padding, Pooling, Prepared, Template};
pub use text_encoder::{
    load_weights, parse_device, parse_dtype, Encoder, EncoderOptions, ModelFormat,
};

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
    /// Hash of the model files (see [`text_encoder::model_hash`]).
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
}
