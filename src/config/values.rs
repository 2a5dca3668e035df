//! The closed sets of values some config keys take (`encoder.pooling`, `index.backend`, ...).
//!
//! Each is one enum that the TOML loader, JSON (manifests, `training.json`, the HTTP API) and
//! the command line (`clap::ValueEnum`) all read: a bad value is an error where it is read,
//! naming the key and the values allowed. The spelling of a value is the same everywhere
//! (lowercase; `tests::serde_and_clap_spell_every_value_alike` holds serde to clap's), and
//! `Display` writes it. The owning modules re-export their enums (`encoder::Pooling`,
//! `index::Backend`, `train::Trainable`, ...), so this module imports none of them.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the model runs (`model.device`, `--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Device {
    /// The CPU.
    Cpu,
    /// GPU 0 (needs the `cuda` cargo feature and an NVIDIA driver).
    Cuda,
    /// The GPU when one can be opened, else the CPU.
    Auto,
}

/// Weight and activation dtype for inference (`model.dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Dtype {
    F32,
    /// On CPUs with AVX-512 BF16: f32 weights, projections in the bf16 kernel.
    Bf16,
    F16,
    /// CPUs with AVX-512 VNNI only: projections quantised to int8 per output channel,
    /// activations per row at each call (cosine to f32 in `docs/results.md`).
    Int8,
}

/// How token hidden states become one vector (`encoder.pooling`, `--pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Pooling {
    /// Mean of the 8 special-token positions (the method's pooling).
    Llama2Vec,
    /// The last real token (RepLLaMA-style fallback).
    Last,
    /// Mean over the content tokens (fallback for models without trained `<sN>` rows).
    Mean,
}

/// Whether texts are wrapped in the SELF/NEXT prompts (`encoder.template`, `--template`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Template {
    /// The SELF (passage) and NEXT (query) prompts ending in the `<sN>` tokens.
    Llama2Vec,
    /// The raw text.
    None,
}

/// Which side of a batch row holds the padding (`encoder.padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Padding {
    Left,
    Right,
}

/// Which ANN implementation serves a database (`index.backend`, `--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Backend {
    /// HNSW graph (`hnsw_rs`).
    Hnsw,
    /// A FAISS index factory (needs the `faiss` cargo feature).
    Faiss,
    /// Exact scan.
    Flat,
}

/// How log lines are written on stderr (`server.log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum LogFormat {
    /// Plain text.
    Text,
    /// One JSON object per line: `ts` (Unix seconds), `level`, `event`, `message` and the
    /// event's fields.
    Json,
}

/// Where fine-tuning's hard negatives come from (`train.hard_negatives`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum HardNegatives {
    /// BM25 over the training corpus (in memory).
    Bm25,
    /// The current encoder (exact scan).
    Dense,
    /// None mined: random passages.
    None,
}

/// How hybrid search fuses its two rankings (`eval.fusion`, `--fusion`, the API's `fusion`);
/// its parameters are `eval.rrf_k` and `eval.hybrid_alpha` (see `fusion::Fusion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum FusionMethod {
    /// Reciprocal-rank fusion.
    Rrf,
    /// Min-max normalised convex combination.
    Convex,
}

/// `Display` (the value's one spelling) and `FromStr` (an [`Error::InvalidInput`] naming
/// `$name` and the values allowed) for the enums above, from their `ValueEnum` names.
macro_rules! spelled_by_clap {
    ($($t:ty => $name:literal),+ $(,)?) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.to_possible_value().expect("no variant is skipped").get_name())
            }
        }

        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                <$t as ValueEnum>::from_str(s, false).map_err(|_| {
                    Error::InvalidInput(format!(
                        "{} must be one of {}, got {s:?}",
                        $name,
                        spellings::<$t>().join(" | ")
                    ))
                })
            }
        }
    )+};
}

spelled_by_clap!(
    Device => "device",
    Dtype => "dtype",
    Pooling => "pooling",
    Template => "template",
    Padding => "padding",
    Backend => "backend",
    LogFormat => "log_format",
    HardNegatives => "hard_negatives",
    FusionMethod => "fusion",
);

/// The spellings of `T`'s values, in declaration order.
pub fn spellings<T: ValueEnum>() -> Vec<String> {
    T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|p| p.get_name().to_string())
        .collect()
}

/// The trainable-parameter choice (`train.trainable`, `--trainable`): `all`, `last:N` or
/// `lora`, written in that form in configs and `training.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Trainable {
    /// Every tensor, the embedding included.
    All,
    /// The last N blocks and the final norm (plus the `<sN>` rows).
    Last(usize),
    /// LoRA adapters on q,k,v,o,gate,up,down of every block (plus the `<sN>` rows).
    Lora,
}

impl FromStr for Trainable {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Self::All),
            "lora" => Ok(Self::Lora),
            _ => match s.strip_prefix("last:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Self::Last(n)),
                _ => Err(Error::InvalidInput(format!(
                    "trainable must be all | last:N (N > 0) | lora, got {s:?}"
                ))),
            },
        }
    }
}

impl fmt::Display for Trainable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Last(n) => write!(f, "last:{n}"),
            Self::Lora => f.write_str("lora"),
        }
    }
}

impl TryFrom<String> for Trainable {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Trainable> for String {
    fn from(t: Trainable) -> String {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value's serde spelling (configs, manifests, JSON) is its clap spelling (flags,
    /// `Display`), and `FromStr` reads it back.
    #[test]
    fn serde_and_clap_spell_every_value_alike() {
        fn check<T>()
        where
            T: ValueEnum + Serialize + FromStr + PartialEq + fmt::Debug + fmt::Display,
            <T as FromStr>::Err: fmt::Debug,
        {
            for v in T::value_variants() {
                let json = serde_json::to_value(v).unwrap();
                assert_eq!(json, serde_json::Value::String(v.to_string()), "{v:?}");
                assert_eq!(&v.to_string().parse::<T>().unwrap(), v);
            }
        }
        check::<Device>();
        check::<Dtype>();
        check::<Pooling>();
        check::<Template>();
        check::<Padding>();
        check::<Backend>();
        check::<LogFormat>();
        check::<HardNegatives>();
        check::<FusionMethod>();
        assert_eq!(spellings::<Pooling>(), ["llama2vec", "last", "mean"]);
        let err = "max".parse::<FusionMethod>().unwrap_err().to_string();
        assert!(err.contains("fusion must be one of rrf | convex, got \"max\""), "{err}");
    }

    #[test]
    fn trainable_reads_and_writes_its_text_form() {
        for (text, t) in
            [("all", Trainable::All), ("last:2", Trainable::Last(2)), ("lora", Trainable::Lora)]
        {
            assert_eq!(text.parse::<Trainable>().unwrap(), t);
            assert_eq!(t.to_string(), text);
            assert_eq!(serde_json::to_value(t).unwrap(), text);
            assert_eq!(serde_json::from_value::<Trainable>(text.into()).unwrap(), t);
        }
        for bad in ["last:0", "last:x", "some", "last"] {
            assert!(bad.parse::<Trainable>().is_err(), "{bad}");
            assert!(serde_json::from_value::<Trainable>(bad.into()).is_err(), "{bad}");
        }
    }
}
