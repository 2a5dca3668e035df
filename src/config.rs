//! Configuration: `configs/default.toml` is compiled in as the single source of defaults, an
//! optional user file is overlaid key by key, and CLI flags override the result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod values;

pub use values::{
    Backend, Device, Dtype, FusionMethod, HardNegatives, LogFormat, Padding, Pooling, Template,
    Trainable,
};

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
    pub store: StoreConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub device: Device,
    pub dtype: Dtype,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub pooling: Pooling,
    pub template: Template,
    pub max_query_tokens: usize,
    pub max_passage_tokens: usize,
    pub padding: Padding,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    pub backend: Backend,
    pub hnsw_m: usize,
    pub hnsw_ef_construction: usize,
    pub hnsw_ef_search: usize,
    pub hnsw_parallel_insert: bool,
    pub faiss_factory: String,
    pub faiss_nprobe: usize,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    /// Encoder batches sorted by length and committed together by `engine index`.
    pub window_batches: usize,
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
    /// A dense or hybrid search whose best cosine similarity is below this says the dense
    /// match is weak (`warning` in the response, shown by the UI).
    pub weak_dense_score: f32,
    /// Print one line per request (method, path, status, milliseconds) on stderr.
    pub log_requests: bool,
    /// How log lines (the server's ready line and request log, and every command's
    /// diagnostics) are written on stderr.
    pub log_format: LogFormat,
    /// Where `POST /snapshots` writes archives; empty: `DB.snapshots/` beside the database.
    pub snapshot_dir: PathBuf,
    /// The folder of the named collections (one database folder each, see
    /// `server::collections`); empty: `DB.collections/` beside the database.
    pub collections_dir: PathBuf,
    /// Origins browsers may call the API from (CORS); empty: none. See `server::cors`.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// The `[train]` section; resolved with the command line's overrides it is a run's
/// hyper-parameters (`train::Hyper`), written into `training.json`. The `serde(default)`s
/// read `training.json` files written before those keys existed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    pub trainable: Trainable,
    /// Whether the 16 `<sN>` embedding rows train (the reference). Without them, `last:N`
    /// back-propagates through N layers only instead of all of them.
    #[serde(default = "default_true")]
    pub train_special_rows: bool,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    /// Dropout on the LoRA branch's input (the reference: 0.1).
    #[serde(default)]
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
    pub hard_negatives: HardNegatives,
    pub hard_negative_depth: usize,
    /// Mined ranks skipped before sampling negatives (unjudged positives sit at the top).
    #[serde(default)]
    pub hard_negative_skip: usize,
    /// 1 = negatives mined once before training; 2 = mined again with the current encoder
    /// after half the steps (ANCE-style).
    #[serde(default = "default_one")]
    pub mining_rounds: usize,
    /// Leave passages relevant to a query out of its in-batch negatives (off in the reference).
    #[serde(default)]
    pub mask_false_negatives: bool,
    pub validation_queries: usize,
    pub validation_corpus: usize,
    /// MiB of the frozen layers' hidden states kept for texts that recur across fine-tuning
    /// steps (`train::prefix_cache`; 0: recomputed every time).
    #[serde(default)]
    pub frozen_cache_mb: usize,
}

fn default_true() -> bool {
    true
}

fn default_one() -> usize {
    1
}

/// Where commands keep their data when no `--db` or `--store` flag says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A PostgreSQL URL (`postgres://user@host:port/dbname`) for the PostgreSQL store; empty:
    /// commands need `--db DIR` (the embedded store) or `--store URL`.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub k: usize,
    pub fusion: FusionMethod,
    pub rrf_k: usize,
    pub hybrid_alpha: f64,
}

impl Default for Config {
    fn default() -> Self {
        // The compiled-in file is covered by a unit test, so this cannot fail at run time.
        toml::from_str(DEFAULT_TOML).expect("configs/default.toml is valid")
    }
}

/// Prefix of the environment variables that set config keys: `ENGINE__SECTION__KEY=value`
/// (e.g. `ENGINE__SERVER__ADDR=0.0.0.0:8080`), see [`apply_env`].
pub const ENV_PREFIX: &str = "ENGINE__";

impl Config {
    /// Defaults, overlaid with `path` when given, then with `ENGINE__SECTION__KEY` environment
    /// variables: precedence is flags (applied by the commands) > environment > file > defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let vars = std::env::vars_os()
            .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with(ENV_PREFIX)))
            .map(|(k, v)| {
                let name = k.to_string_lossy().into_owned();
                v.into_string()
                    .map(|v| (name.clone(), v))
                    .map_err(|_| Error::Config(format!("{name}: the value is not UTF-8")))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::load_with_env(path, vars)
    }

    /// [`Config::load`] with the given environment variables instead of the process's.
    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut base: toml::Value =
            toml::from_str(DEFAULT_TOML).map_err(|e| Error::Config(e.to_string()))?;
        let mut file = None;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            let overlay: toml::Value = toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            merge(&mut base, overlay.clone());
            file = Some((path, overlay));
        }
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        apply_env(&mut base, vars.clone())?;
        serde_path_to_error::deserialize(base).map_err(|e| {
            let key = e.path().to_string();
            let origin = vars
                .iter()
                .rev()
                .find(|(name, _)| env_key(name).is_some_and(|k| k == key))
                .map(|(name, _)| format!(" (set by the environment variable {name})"))
                .or_else(|| {
                    let (path, overlay) = file.as_ref()?;
                    let set = key.split('.').try_fold(overlay, |v, part| v.get(part)).is_some();
                    set.then(|| format!(" (in {})", path.display()))
                })
                .unwrap_or_default();
            // The message without toml's own "in `key`" line: the key leads here.
            Error::Config(format!("{key}: {}{origin}", e.into_inner().message()))
        })
    }
}

/// The config key (`section.key`, lowercase) an `ENGINE__SECTION__KEY` variable names, if any.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    Some(rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join("."))
}

/// Sets the keys that `ENGINE__SECTION__KEY` variables name (section and key in any case;
/// other variables are ignored). A value is read as the key's type: strings as given, numbers
/// and booleans parsed, lists as a TOML array (`["a", "b"]`) or comma-separated strings. A
/// name that is no config key, or a value that does not parse, is an error naming the
/// variable.
pub fn apply_env(
    base: &mut toml::Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    for (name, raw) in vars {
        let Some(key) = env_key(&name) else { continue };
        let path: Vec<&str> = key.split('.').collect();
        let err = |why: String| Error::Config(format!("environment variable {name}: {why}"));
        if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
            return Err(err(format!("expected {ENV_PREFIX}SECTION__KEY")));
        }
        let mut slot = &mut *base;
        for part in &path {
            slot =
                slot.get_mut(*part).ok_or_else(|| err(format!("there is no config key {key}")))?;
        }
        *slot = env_value(slot, &raw).map_err(err)?;
    }
    Ok(())
}

/// `raw` read as a value of `like`'s type.
fn env_value(like: &toml::Value, raw: &str) -> std::result::Result<toml::Value, String> {
    use toml::Value as V;
    let t = raw.trim();
    match like {
        V::String(_) => Ok(V::String(raw.to_string())),
        V::Integer(_) => {
            t.parse().map(V::Integer).map_err(|_| format!("expected an integer, got {raw:?}"))
        }
        V::Float(_) => {
            t.parse().map(V::Float).map_err(|_| format!("expected a number, got {raw:?}"))
        }
        V::Boolean(_) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(V::Boolean(true)),
            "false" | "0" => Ok(V::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        V::Array(_) if t.starts_with('[') => toml::from_str::<toml::Table>(&format!("v = {t}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
            .ok_or_else(|| format!("expected a TOML array, got {raw:?}")),
        V::Array(_) => Ok(V::Array(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| V::String(s.into()))
                .collect(),
        )),
        _ => Err("this key cannot be set from the environment".into()),
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
        assert_eq!(d.encoder.pooling, Pooling::Llama2Vec);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[index]\nbackend = \"flat\"\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.index.backend, Backend::Flat);
        assert_eq!(c.index.hnsw_m, d.index.hnsw_m);
    }

    #[test]
    fn environment_overrides_the_file_and_names_bad_variables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[server]\naddr = \"1.2.3.4:1\"\nmax_k = 7\n").unwrap();
        let env = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()
        };
        let c = Config::load_with_env(
            Some(&p),
            env(&[
                ("ENGINE__SERVER__ADDR", "0.0.0.0:9000"),
                ("ENGINE__server__Max_Queue_Seconds", "2"),
                ("ENGINE__SERVER__LOG_REQUESTS", "true"),
                ("ENGINE__SERVER__CORS_ORIGINS", "https://a.example, https://b.example"),
                ("ENGINE__MODEL__PATH", "/models/x"),
                ("ENGINE_API_KEY", "not a config key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.addr, "0.0.0.0:9000", "env over file");
        assert_eq!(c.server.max_k, 7, "file over defaults");
        assert_eq!(c.server.max_queue_seconds, 2.0);
        assert!(c.server.log_requests);
        assert_eq!(c.server.cors_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(c.model.path, PathBuf::from("/models/x"));
        let c = Config::load_with_env(None, env(&[("ENGINE__SERVER__CORS_ORIGINS", "[\"*\"]")]))
            .unwrap();
        assert_eq!(c.server.cors_origins, vec!["*"]);
        for (k, v, needle) in [
            ("ENGINE__SERVER__MAX_K", "many", "expected an integer"),
            ("ENGINE__SERVER__NOPE", "1", "no config key server.nope"),
            ("ENGINE__SERVER", "1", "SECTION__KEY"),
            ("ENGINE__SERVER__LOG_REQUESTS", "yes please", "true or false"),
            ("ENGINE__EVAL__HYBRID_ALPHA", "x", "expected a number"),
        ] {
            let err = Config::load_with_env(None, env(&[(k, v)])).unwrap_err().to_string();
            assert!(err.contains(k) && err.contains(needle), "{k}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[index]\nbakend = \"flat\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("bakend"), "{err}");
    }

    /// A bad enumerated value, from a file or the environment, fails at load naming the key,
    /// the values allowed and where it was set.
    #[test]
    fn a_bad_value_names_its_key_and_the_values_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        for (toml, key, allowed) in [
            ("[encoder]\npooling = \"max\"\n", "encoder.pooling", "`llama2vec`, `last`, `mean`"),
            ("[index]\nbackend = \"annoy\"\n", "index.backend", "`hnsw`, `faiss`, `flat`"),
            ("[train]\ntrainable = \"last:0\"\n", "train.trainable", "all | last:N (N > 0) | lora"),
            ("[eval]\nfusion = \"max\"\n", "eval.fusion", "`rrf` or `convex`"),
        ] {
            std::fs::write(&p, toml).unwrap();
            let err = Config::load_with_env(Some(&p), []).unwrap_err().to_string();
            assert!(err.contains(&format!("config: {key}: ")), "{err}");
            assert!(err.contains(allowed) && err.contains(&p.display().to_string()), "{err}");
        }
        let var = ("ENGINE__ENCODER__POOLING".to_string(), "max".to_string());
        let err = Config::load_with_env(None, [var]).unwrap_err().to_string();
        assert!(err.contains("config: encoder.pooling: ") && err.contains("`mean`"), "{err}");
        assert!(err.contains("ENGINE__ENCODER__POOLING"), "{err}");
        let var = ("ENGINE__TRAIN__TRAINABLE".to_string(), "last:3".to_string());
        assert_eq!(Config::load_with_env(None, [var]).unwrap().train.trainable, Trainable::Last(3));
    }

    /// A value of the wrong type fails at load naming its key and the file that set it.
    #[test]
    fn a_wrong_type_names_its_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[index]\nhnsw_m = \"many\"\n").unwrap();
        let err = Config::load_with_env(Some(&p), []).unwrap_err().to_string();
        assert!(err.contains("config: index.hnsw_m: invalid type: string"), "{err}");
        assert!(err.ends_with(&format!("(in {})", p.display())), "{err}");
    }

    #[test]
    fn gpu_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/llara-7b-gpu.toml");
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.model.device, Device::Cuda);
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
