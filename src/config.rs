//! Configuration: `configs/default.toml` is compiled in as the single source of defaults, an
//! optional user file is overlaid key by key, and CLI flags override the result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const DEFAULT_TOML: &str = include_str!("../configs/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub encoder: EncoderConfig,
    pub index: IndexConfig,
    pub server: ServerConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub device: String,
    pub dtype: String,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub pooling: String,
    pub template: String,
    pub max_query_tokens: usize,
    pub max_passage_tokens: usize,
    pub padding: String,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    pub backend: String,
    pub hnsw_m: usize,
    pub hnsw_ef_construction: usize,
    pub hnsw_ef_search: usize,
    pub hnsw_parallel_insert: bool,
    pub faiss_factory: String,
    pub faiss_nprobe: usize,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub id_field: String,
    pub title_field: String,
    pub text_field: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub addr: String,
    pub default_k: usize,
    pub max_k: usize,
    pub max_offset: usize,
    pub max_batch: usize,
    pub max_batch_tokens: usize,
    pub max_wait_ms: u64,
    pub queue_capacity: usize,
    pub max_queue_seconds: f64,
    pub max_request_tokens: usize,
    pub max_connections: usize,
    pub header_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    pub max_query_tokens: usize,
    pub max_documents_per_request: usize,
    pub max_embed_texts: usize,
    pub snippet_chars: usize,
    /// Print one line per request (method, path, status, milliseconds) on stderr.
    pub log_requests: bool,
    /// Origins browsers may call the API from (CORS); empty: none. See `server::cors`.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    pub lr: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_steps: usize,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub trainable: String,
    pub train_special_rows: bool,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub max_seq_tokens: usize,
    pub checkpoint_every: usize,
    pub log_every: usize,
    pub validation_every: usize,
    pub validation_examples: usize,
    pub temperature: f64,
    pub group_size: usize,
    pub max_query_tokens: usize,
    pub max_passage_tokens: usize,
    pub hard_negatives: String,
    pub hard_negative_depth: usize,
    pub hard_negative_skip: usize,
    pub mining_rounds: usize,
    pub mask_false_negatives: bool,
    pub validation_queries: usize,
    pub validation_corpus: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub k: usize,
    pub fusion: String,
    pub rrf_k: usize,
    pub hybrid_alpha: f64,
}

impl Default for Config {
    fn default() -> Self {
        // The compiled-in file is covered by a unit test, so this cannot fail at run time.
        toml::from_str(DEFAULT_TOML).expect("configs/default.toml is valid")
    }
}

impl Config {
    /// Defaults, overlaid with `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut base: toml::Value =
            toml::from_str(DEFAULT_TOML).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            let overlay: toml::Value = toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            merge(&mut base, overlay);
        }
        base.try_into().map_err(|e: toml::de::Error| Error::Config(e.to_string()))
    }
}

/// Recursive table merge: keys in `overlay` replace those in `base`, tables merge.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_overlay_changes_only_given_keys() {
        let d = Config::default();
        assert_eq!(d.encoder.pooling, "llama2vec");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[index]\nbackend = \"flat\"\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.index.backend, "flat");
        assert_eq!(c.index.hnsw_m, d.index.hnsw_m);
    }

    #[test]
    fn unknown_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[index]\nbakend = \"flat\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("bakend"), "{err}");
    }

    #[test]
    fn gpu_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/llara-7b-gpu.toml");
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.model.device, "cuda");
    }

    /// Every shipped config is a valid overlay (a renamed key would otherwise surface only when
    /// a user or a script loads it).
    #[test]
    fn every_shipped_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "expected the shipped configs, found {n}");
    }
}
