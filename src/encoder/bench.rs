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

/// Token ids cycling through ordinary vocabulary, so the work equals real text's.
fn synthetic(n: usize, offset: usize) -> Prepared {
    let ids: Vec<u32> = (0..n).map(|i| 1000 + ((i * 37 + offset * 101) % 20000) as u32).collect();
    Prepared { ids, pool: vec![n - 1], truncated: false }
}

/// One batch forward (after a warm-up) and the median of 7 single-query latencies.
pub fn measure_encoder(enc: &Encoder, shape: &EncodeShape) -> Result<EncodeMeasurement> {
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
