//! Hugging Face folders: `config.json` + one or several `*.safetensors` (with
//! `model.safetensors.index.json`) + `tokenizer.json`. The format of Llama-2-7B and of the
//! released BAAI/LLARA-* checkpoints, and what `engine adapt`/`finetune` write.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::model::{LayerWeights, LlamaConfig, LlamaWeights};
use super::tokenizer::LlmTokenizer;
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_ctx() -> usize {
    4096
}

/// The safetensors files of a folder: those named by the index file, else every
/// `*.safetensors` in name order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let idx: Index = serde_json::from_str(&std::fs::read_to_string(&index)?)
            .map_err(|e| Error::model(&index, format!("malformed index: {e}")))?;
        let files: BTreeSet<&String> = idx.weight_map.values().collect();
        let paths: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.exists()) {
            return Err(Error::model(missing, "weight file named by the index is missing"));
        }
        return Ok(paths);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::model(dir, "no *.safetensors file in the model folder"));
    }
    Ok(files)
}

/// Loads a Hugging Face Llama folder.
pub fn load(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(LlamaConfig, LlamaWeights, LlmTokenizer)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| Error::model(&cfg_path, format!("cannot read config.json: {e}")))?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| Error::model(&cfg_path, format!("malformed config.json: {e}")))?;
    let is_llama = hf.model_type.as_deref() == Some("llama")
        || hf.architectures.iter().any(|a| a == "LlamaForCausalLM" || a == "LlamaModel");
    if !is_llama {
        return Err(Error::model(
            &cfg_path,
            format!(
                "unsupported architecture (model_type {:?}, architectures {:?}); only llama",
                hf.model_type, hf.architectures
            ),
        ));
    }
    let config = LlamaConfig {
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        vocab_size: hf.vocab_size,
        rms_norm_eps: hf.rms_norm_eps,
        rope_theta: hf.rope_theta,
        max_position_embeddings: hf.max_position_embeddings,
        tie_word_embeddings: hf.tie_word_embeddings,
    };
    let files = weight_files(dir)?;
    // Safety: memory-mapped files must not change while mapped; model folders are read-only
    // inputs here.
    let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| Error::model(dir, format!("cannot read safetensors: {e}")))?;
    let get = |name: &str| -> Result<Tensor> {
        let t = tensors
            .load(name, &Device::Cpu)
            .map_err(|e| Error::model(dir, format!("tensor {name}: {e}")))?;
        Ok(t.to_dtype(dtype)?)
    };
    let embed = get("model.embed_tokens.weight")?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let t = |n: &str| get(&format!("model.layers.{i}.{n}"));
        layers.push(LayerWeights {
            attn_norm: t("input_layernorm.weight")?,
            q: t("self_attn.q_proj.weight")?,
            k: t("self_attn.k_proj.weight")?,
            v: t("self_attn.v_proj.weight")?,
            o: t("self_attn.o_proj.weight")?,
            ffn_norm: t("post_attention_layernorm.weight")?,
            gate: t("mlp.gate_proj.weight")?,
            up: t("mlp.up_proj.weight")?,
            down: t("mlp.down_proj.weight")?,
        });
    }
    let final_norm = get("model.norm.weight")?;
    let lm_head = if config.tie_word_embeddings { None } else { Some(get("lm_head.weight")?) };
    let mut weights = LlamaWeights { embed, layers, final_norm, lm_head };
    let (rows, width) = weights.embed.dims2()?;
    if width != config.hidden_size || rows != config.vocab_size {
        return Err(Error::model(
            dir,
            format!(
                "embed_tokens has shape [{rows}, {width}], config says [{}, {}]",
                config.vocab_size, config.hidden_size
            ),
        ));
    }
    super::gguf::check_shapes(&config, &weights).map_err(|m| Error::model(dir, m))?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.exists() {
        return Err(Error::model(&tok_path, "tokenizer.json missing from the model folder"));
    }
    let tokenizer = LlmTokenizer::from_file(&tok_path, rows)?;
    if tokenizer.added_special() > 0 {
        weights.grow_vocab(tokenizer.added_special())?;
    }
    let config = LlamaConfig { vocab_size: rows + tokenizer.added_special(), ..config };
    let weights = to_device(weights, dtype, device)?;
    Ok((config, weights, tokenizer))
}

/// Moves every weight to `device` in `dtype` (norm weights too: candle's fused rms_norm wants
/// matching dtypes).
pub fn to_device(mut w: LlamaWeights, dtype: DType, device: &Device) -> Result<LlamaWeights> {
    for (_, t) in w.named_tensors_mut() {
        *t = t.to_dtype(dtype)?.to_device(device)?;
    }
    Ok(w)
}

/// Writes a Hugging Face folder (config.json, model.safetensors, tokenizer.json) that
/// [`load`] and Hugging Face transformers both read. Weights are saved in f32.
pub fn save(
    dir: &Path,
    config: &LlamaConfig,
    weights: &LlamaWeights,
    tokenizer: &LlmTokenizer,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    let tensors: HashMap<String, Tensor> = weights
        .named_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    // Write then rename, so a crash never leaves a truncated model behind.
    let tmp = dir.join("model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, dir.join("model.safetensors"))?;
    tokenizer.save(&dir.join("tokenizer.json"))?;
    Ok(())
}
