//! Encoder throughput/latency measurement shared by `engine bench encode` and training benches.

use std::time::Instant;

use super::template::Prepared;
use super::Encoder;
use crate::error::Result;

/// The workload: `batch` passages of `tokens` tokens, and one `query_tokens` query.
#[derive(Debug, Clone, Copy)]
pub struct EncodeShape {
    pub batch: usize,
    pub tokens: usize,
    pub query_tokens: usize,
}

pub struct EncodeMeasurement {
    pub tokens_per_s: f64,
    pub query_ms: f64,
}

/// `n` token ids cycling through ordinary vocabulary (ids 1000..21000 of a real vocabulary,
/// the middle of a tiny test one), so the work equals real text's; `seed` varies the sequence.
pub fn synthetic_ids(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    let base = (vocab / 4).min(1000);
    let span = (vocab - base).min(20000);
    (0..n).map(|i| (base + (i * 37 + seed * 101) % span) as u32).collect()
}

/// One batch forward (after a warm-up) and the median of 7 single-query latencies.
pub fn measure_encoder(enc: &Encoder, shape: &EncodeShape) -> Result<EncodeMeasurement> {
    let vocab = enc.model().config.vocab_size;
    let synthetic = |n: usize, seed: usize| Prepared {
        ids: synthetic_ids(n, seed, vocab),
        pool: vec![n - 1],
        truncated: false,
    };
    let batch: Vec<Prepared> = (0..shape.batch).map(|i| synthetic(shape.tokens, i)).collect();
    let refs: Vec<&Prepared> = batch.iter().collect();
    enc.embed_batch(&refs[..refs.len().min(2)])?;
    let t = Instant::now();
    enc.embed_batch(&refs)?;
    let tokens_per_s = (shape.batch * shape.tokens) as f64 / t.elapsed().as_secs_f64();
    let q = synthetic(shape.query_tokens, 7);
    enc.embed_batch(&[&q])?;
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            enc.embed_batch(&[&q]).map(|_| t.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_>>()?;
    Ok(EncodeMeasurement { tokens_per_s, query_ms: median(&mut times) })
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
