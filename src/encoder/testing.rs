//! Tiny randomly initialised Llama models for tests: built in memory or written as a Hugging
//! Face folder that every command can load, so tests run in seconds without the real model.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::model::{LayerWeights, Llama, LlamaConfig, LlamaWeights};
use super::tokenizer::LlmTokenizer;
use crate::error::{Error, Result};

/// Byte-level vocabulary (256 symbols, no merges) plus `<|endoftext|>`: every UTF-8 text
/// tokenizes, one token per byte.
pub const TINY_VOCAB: usize = 257;

/// The configuration of [`write_tiny_model`].
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: TINY_VOCAB,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
    }
}

/// Random weights (normal, std 0.1 for matrices, 1 for norms) for `cfg`, deterministic in `seed`.
pub fn random_llama(cfg: &LlamaConfig, seed: u64, device: &Device) -> Result<Llama> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = |rows: usize, cols: usize, std: f32| -> Result<Tensor> {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| {
                // Box-Muller: two uniforms give one standard normal.
                let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
                let u2: f32 = rng.gen();
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect();
        Ok(Tensor::from_vec(data, (rows, cols), device)?)
    };
    let h = cfg.hidden_size;
    let kv = cfg.num_key_value_heads * cfg.head_dim();
    let i = cfg.intermediate_size;
    let ones = |n: usize| Tensor::ones(n, DType::F32, device);
    let embed = normal(cfg.vocab_size, h, 1.0)?;
    let mut layers = Vec::new();
    for _ in 0..cfg.num_hidden_layers {
        layers.push(LayerWeights {
            attn_norm: ones(h)?,
            q: normal(h, h, 0.1)?,
            k: normal(kv, h, 0.1)?,
            v: normal(kv, h, 0.1)?,
            o: normal(h, h, 0.1)?,
            ffn_norm: ones(h)?,
            gate: normal(i, h, 0.1)?,
            up: normal(i, h, 0.1)?,
            down: normal(h, i, 0.1)?,
        });
    }
    let lm_head =
        if cfg.tie_word_embeddings { None } else { Some(normal(cfg.vocab_size, h, 0.1)?) };
    Llama::new(cfg.clone(), LlamaWeights { embed, layers, final_norm: ones(h)?, lm_head })
}

/// The byte-level tokenizer of the tiny model, as a `tokenizers` object.
pub fn tiny_hf_tokenizer() -> Result<Tokenizer> {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let vocab: ahash::AHashMap<String, u32> =
        alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    Ok(tok)
}

/// Writes a tiny random Llama (config.json, model.safetensors, tokenizer.json) into `dir` and
/// returns the folder. Deterministic for a given `seed`. It lacks the `<sN>` tokens, like any
/// base checkpoint, so loading it exercises the add-special-tokens path.
pub fn write_tiny_model(dir: &Path, seed: u64) -> Result<PathBuf> {
    let cfg = tiny_config();
    let model = random_llama(&cfg, seed, &Device::Cpu)?;
    std::fs::create_dir_all(dir)?;
    let tok_path = dir.join("tokenizer.json");
    tiny_hf_tokenizer()?.save(&tok_path, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
    // Round-trip through the engine's own tokenizer type so `hf::save` writes the same file.
    let tokenizer = LlmTokenizer::from_file(&tok_path, TINY_VOCAB)?;
    let plain = Tokenizer::from_file(&tok_path).map_err(|e| Error::Tokenizer(e.to_string()))?;
    super::hf::save(dir, &cfg, &model.weights, &tokenizer)?;
    // Keep the on-disk tokenizer without the <sN> tokens: the loader must add them.
    plain.save(&tok_path, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(dir.to_path_buf())
}
