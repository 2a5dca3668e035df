//! A deterministic stand-in encoder for tests (library, integration and the CLI's hidden
//! `ENGINE_TEST_HASH_ENCODER` hook): hashed bag of lowercase words, L2-normalised, with
//! whitespace tokens. Texts sharing words get similar vectors, so retrieval tests are meaningful
//! without loading a model.

use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::encoder::{Embed, EncoderFingerprint, ForwardStats, TextKind};
use crate::error::Result;

pub struct HashEmbedder {
    dim: usize,
    max_passage_tokens: usize,
    /// Each `embed` call counted as one padded batch of whitespace tokens.
    stats: Mutex<ForwardStats>,
}

impl HashEmbedder {
    /// A `dim`-dimensional embedder with no passage length limit.
    pub fn new(dim: usize) -> Self {
        HashEmbedder {
            dim: dim.max(2),
            max_passage_tokens: usize::MAX,
            stats: Mutex::new(ForwardStats::default()),
        }
    }

    /// Reports `tokens` as its passage limit, as a real encoder's `encoder.max_passage_tokens`.
    pub fn with_passage_limit(mut self, tokens: usize) -> Self {
        self.max_passage_tokens = tokens;
        self
    }

    fn one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        for word in text.split_whitespace() {
            let w: String =
                word.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
            if w.is_empty() {
                continue;
            }
            let h = Sha256::digest(w.as_bytes());
            let i = u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8])) as usize % self.dim;
            v[i] += if h[8] & 1 == 0 { 1.0 } else { -1.0 };
        }
        // A fixed component keeps empty or cancelling texts from becoming the zero vector.
        v[0] += 0.01;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

impl Embed for HashEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }
    fn fingerprint(&self) -> EncoderFingerprint {
        EncoderFingerprint {
            model_hash: "test-hash-embedder-v1".into(),
            pooling: "bag-of-words".into(),
            template: "none".into(),
            dim: self.dim,
            // Its bag-of-words vectors rank by word overlap: treat it as a real retriever.
            trained: true,
            model_path: None,
        }
    }
    fn embed(&self, texts: &[&str], _kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<u64> = texts.iter().map(|t| t.split_whitespace().count() as u64).collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if let Ok(mut s) = self.stats.lock() {
            s.sequences += texts.len() as u64;
            s.tokens += lengths.iter().sum::<u64>();
            s.padding += lengths.iter().map(|n| longest - n).sum::<u64>();
        }
        Ok(texts.iter().map(|t| self.one(t)).collect())
    }
    fn forward_stats(&self) -> ForwardStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
    fn max_passage_tokens(&self) -> usize {
        self.max_passage_tokens
    }
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            spans.push((s, text.len()));
        }
        Ok(spans)
    }
}
