//! GGUF loading: metadata, dequantized tensors and the tokenizer stored in the file.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use super::model::{LayerWeights, LlamaConfig, LlamaWeights};
use super::tokenizer::{GgufVocab, LlmTokenizer};
use crate::error::{Error, Result};

/// Reads a llama-architecture GGUF file into f32 (or `dtype`) weights on `device`.
pub fn load(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(LlamaConfig, LlamaWeights, LlmTokenizer)> {
    let err = |m: String| Error::model(path, m);
    let mut file = File::open(path).map_err(|e| err(format!("cannot open model file: {e}")))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| err(format!("not a readable GGUF file: {e}")))?;
    let md = &content.metadata;
    let get = |k: &str| md.get(k).ok_or_else(|| err(format!("metadata key {k} missing")));
    let arch = get("general.architecture")?.to_string().map_err(|e| err(e.to_string()))?.clone();
    if arch != "llama" {
        return Err(err(format!("unsupported architecture {arch:?} (only llama)")));
    }
    let num = |k: &str| -> Result<usize> {
        let v = get(&format!("llama.{k}"))?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .map_err(|e| err(format!("llama.{k}: {e}")))
    };
    let float = |k: &str, default: f64| -> f64 {
        md.get(&format!("llama.{k}")).and_then(|v| v.to_f32().ok()).map_or(default, |x| x as f64)
    };
    let heads = num("attention.head_count")?;
    let config = LlamaConfig {
        hidden_size: num("embedding_length")?,
        intermediate_size: num("feed_forward_length")?,
        num_hidden_layers: num("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: num("attention.head_count_kv").unwrap_or(heads),
        vocab_size: 0, // set from the embedding below
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10000.0),
        max_position_embeddings: num("context_length").unwrap_or(4096),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
    };

    let mut tensor = |name: &str| -> Result<Tensor> {
        let q = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| err(format!("tensor {name}: {e}")))?;
        let t = q.dequantize(&Device::Cpu).map_err(|e| err(format!("tensor {name}: {e}")))?;
        Ok(t)
    };
    let embed = tensor("token_embd.weight")?;
    let (vocab, hidden) = embed.dims2()?;
    if hidden != config.hidden_size {
        return Err(err(format!("token_embd has width {hidden}, expected {}", config.hidden_size)));
    }
    let hd = config.head_dim();
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let mut t = |n: &str| tensor(&format!("blk.{i}.{n}.weight"));
        layers.push(LayerWeights {
            attn_norm: t("attn_norm")?,
            q: unpermute_rows(&t("attn_q")?, config.num_attention_heads, hd)?,
            k: unpermute_rows(&t("attn_k")?, config.num_key_value_heads, hd)?,
            v: t("attn_v")?,
            o: t("attn_output")?,
            ffn_norm: t("ffn_norm")?,
            gate: t("ffn_gate")?,
            up: t("ffn_up")?,
            down: t("ffn_down")?,
        });
    }
    let final_norm = tensor("output_norm.weight")?;
    let lm_head = if config.tie_word_embeddings { None } else { Some(tensor("output.weight")?) };
    let mut weights = LlamaWeights { embed, layers, final_norm, lm_head };
    check_shapes(&config, &weights).map_err(err)?;

    let strings = |k: &str| -> Result<Vec<String>> {
        get(k)?
            .to_vec()
            .map_err(|e| err(format!("{k}: {e}")))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| err(format!("{k}: {e}"))))
            .collect()
    };
    let opt_u32 = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
    let token_types = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|x| x.to_i32().unwrap_or(1))
            .collect(),
        None => vec![],
    };
    let model_kind = md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok().cloned());
    if model_kind.as_deref() != Some("gpt2") {
        return Err(err(format!(
            "tokenizer model {model_kind:?} is not supported from GGUF (byte-level BPE \"gpt2\" is); \
             use a Hugging Face folder with tokenizer.json"
        )));
    }
    let tokenizer = LlmTokenizer::from_gguf(GgufVocab {
        tokens: strings("tokenizer.ggml.tokens")?,
        merges: strings("tokenizer.ggml.merges")?,
        token_types,
        pre: md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok().cloned()),
        bos: opt_u32("tokenizer.ggml.bos_token_id"),
        add_bos: md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false),
        pad: opt_u32("tokenizer.ggml.padding_token_id"),
        unk: opt_u32("tokenizer.ggml.unknown_token_id"),
    })?;
    if tokenizer.added_special() > 0 {
        weights.grow_vocab(tokenizer.added_special())?;
    }
    let config = LlamaConfig { vocab_size: vocab + tokenizer.added_special(), ..config };
    let weights = super::hf::to_device(weights, dtype, device)?;
    Ok((config, weights, tokenizer))
}

/// llama.cpp's converter interleaves each head's q/k rows (pairs for "rope_i"). Undo it so the
/// Hugging Face "rotate half" RoPE applies: view rows as (heads, hd/2, 2) and swap the last two.
fn unpermute_rows(w: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    Ok(w.reshape((heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Verifies every weight has the shape the config implies, so a bad file fails at load with a
/// message naming the tensor instead of deep inside a matmul.
pub(crate) fn check_shapes(cfg: &LlamaConfig, w: &LlamaWeights) -> std::result::Result<(), String> {
    let h = cfg.hidden_size;
    let kv = cfg.num_key_value_heads * cfg.head_dim();
    let i = cfg.intermediate_size;
    if !h.is_multiple_of(cfg.num_attention_heads)
        || !cfg.num_attention_heads.is_multiple_of(cfg.num_key_value_heads)
    {
        return Err(format!(
            "heads ({}) must divide hidden ({h}) and be a multiple of kv heads ({})",
            cfg.num_attention_heads, cfg.num_key_value_heads
        ));
    }
    for (li, l) in w.layers.iter().enumerate() {
        let expect: [(&str, &Tensor, &[usize]); 9] = [
            ("attn_norm", &l.attn_norm, &[h]),
            ("q", &l.q, &[h, h]),
            ("k", &l.k, &[kv, h]),
            ("v", &l.v, &[kv, h]),
            ("o", &l.o, &[h, h]),
            ("ffn_norm", &l.ffn_norm, &[h]),
            ("gate", &l.gate, &[i, h]),
            ("up", &l.up, &[i, h]),
            ("down", &l.down, &[h, i]),
        ];
        for (name, t, dims) in expect {
            if t.dims() != dims {
                return Err(format!("layer {li} {name}: shape {:?}, expected {dims:?}", t.dims()));
            }
        }
    }
    if w.final_norm.dims() != [h] {
        return Err(format!("final norm: shape {:?}, expected [{h}]", w.final_norm.dims()));
    }
    Ok(())
}
