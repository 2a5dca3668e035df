//! Trained deltas: an encoder folder that holds only the tensors training changed (bf16), a
//! manifest naming the base model by path and sha256, and the training provenance. Loading
//! one loads the base and overlays the delta, so a fine-tuned encoder can be committed and
//! shipped in a few tens of MB while the base model is fetched at setup.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{LlamaConfig, LlamaWeights};
use super::tokenizer::LlmTokenizer;
use crate::error::{Error, Result};

/// The manifest file that makes a folder a delta encoder.
pub const DELTA_MANIFEST: &str = "delta.json";
/// The changed tensors.
pub const DELTA_WEIGHTS: &str = "delta.safetensors";
/// Name under which the added `<sN>` embedding rows are stored when only they changed in
/// the embedding table.
pub const SPECIAL_ROWS: &str = "special_rows.embed";
/// The training report copied from the trained folder.
pub const TRAINING_REPORT: &str = "training.json";
/// The `method` a training report names when the encoder was fine-tuned for retrieval.
pub const RETRIEVAL_TRAINING_METHOD: &str = "finetune";

/// What `delta.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaManifest {
    /// The base model, relative to the delta folder (or absolute).
    pub base: PathBuf,
    /// sha256 of the whole base file (a folder base: of its `model.safetensors`).
    pub base_sha256: String,
    /// Names of the stored tensors (Hugging Face names, or [`SPECIAL_ROWS`]).
    pub tensors: Vec<String>,
    /// Storage dtype of the tensors.
    pub dtype: String,
}

/// Whether `dir` is a delta encoder folder.
pub fn is_delta(dir: &Path) -> bool {
    dir.join(DELTA_MANIFEST).is_file()
}

/// sha256 of a model: the file itself, or a folder's `model.safetensors`.
pub fn base_sha256(base: &Path) -> Result<String> {
    let file = if base.is_dir() { base.join("model.safetensors") } else { base.to_path_buf() };
    let mut f = std::fs::File::open(&file)
        .map_err(|e| Error::model(&file, format!("cannot open base model: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn read_manifest(dir: &Path) -> Result<DeltaManifest> {
    let p = dir.join(DELTA_MANIFEST);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::model(&p, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::model(&p, format!("bad delta manifest: {e}")))
}

/// The base model a delta folder names, resolved against the folder.
pub fn base_path(dir: &Path) -> Result<PathBuf> {
    Ok(dir.join(read_manifest(dir)?.base))
}

/// Loads the base named by `dir`'s manifest (checking its sha256) and overlays the delta.
/// `load_base` is the loader for the base's format.
pub fn load(
    dir: &Path,
    dtype: DType,
    device: &Device,
    load_base: impl FnOnce(&Path) -> Result<(LlamaConfig, LlamaWeights, LlmTokenizer)>,
) -> Result<(LlamaConfig, LlamaWeights, LlmTokenizer)> {
    let manifest = read_manifest(dir)?;
    let base = dir.join(&manifest.base);
    if !base.exists() {
        return Err(Error::model(
            &base,
            "the base model of this trained encoder is missing (run `scripts/fetch-model.sh`)",
        ));
    }
    let sha = base_sha256(&base)?;
    if sha != manifest.base_sha256 {
        return Err(Error::model(
            &base,
            format!(
                "base model sha256 {sha} differs from {} recorded in {}",
                manifest.base_sha256,
                dir.join(DELTA_MANIFEST).display()
            ),
        ));
    }
    let (config, mut weights, tokenizer) = load_base(&base)?;
    let delta = candle_core::safetensors::load(dir.join(DELTA_WEIGHTS), &Device::Cpu)?;
    overlay(&mut weights, &delta, dtype, device).map_err(|m| Error::model(dir, m))?;
    Ok((config, weights, tokenizer))
}

/// Replaces tensors of `weights` by the delta's (shapes must match).
fn overlay(
    weights: &mut LlamaWeights,
    delta: &HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> std::result::Result<(), String> {
    let err = |e: candle_core::Error| e.to_string();
    let mut used = 0;
    for (name, t) in weights.named_tensors_mut() {
        if let Some(d) = delta.get(&name) {
            if d.dims() != t.dims() {
                return Err(format!("delta {name} has shape {:?}, base {:?}", d.dims(), t.dims()));
            }
            *t = d.to_dtype(dtype).map_err(err)?.to_device(device).map_err(err)?;
            used += 1;
        }
    }
    if let Some(rows) = delta.get(SPECIAL_ROWS) {
        let (n, h) = rows.dims2().map_err(err)?;
        let (v, width) = weights.embed.dims2().map_err(err)?;
        if h != width || n > v {
            return Err(format!("{SPECIAL_ROWS} has shape [{n}, {h}], embedding [{v}, {width}]"));
        }
        let rows =
            rows.to_dtype(weights.embed.dtype()).map_err(err)?.to_device(device).map_err(err)?;
        let keep = weights.embed.narrow(0, 0, v - n).map_err(err)?;
        weights.embed = Tensor::cat(&[&keep, &rows], 0).map_err(err)?;
        used += 1;
    }
    if used != delta.len() {
        let known: Vec<String> = weights.named_tensors().into_iter().map(|(n, _)| n).collect();
        let unknown: Vec<&String> =
            delta.keys().filter(|k| *k != SPECIAL_ROWS && !known.contains(k)).collect();
        return Err(format!("delta tensors not in the base model: {unknown:?}"));
    }
    Ok(())
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub manifest: DeltaManifest,
    /// Parameters stored.
    pub parameters: usize,
    pub bytes: u64,
}

/// Writes the delta between `trained` (a Hugging Face folder made by `adapt` / `finetune` from
/// `base`) and `base` into `out`: every tensor that differs, in bf16; of the embedding table
/// only the added `<sN>` rows when nothing else changed. `training.json` is copied.
pub fn export(
    trained: (&LlamaWeights, usize),
    base: (&Path, &LlamaWeights),
    trained_dir: &Path,
    out: &Path,
) -> Result<ExportReport> {
    let (trained, added_rows) = trained;
    let (base_file, base) = base;
    let base_named: HashMap<String, Tensor> = base.named_tensors().into_iter().collect();
    let mut stored: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in trained.named_tensors() {
        let b = base_named
            .get(&name)
            .ok_or_else(|| Error::model(trained_dir, format!("{name} is not in the base model")))?;
        if b.dims() != t.dims() {
            return Err(Error::model(
                trained_dir,
                format!("{name} has shape {:?}, the base {:?}", t.dims(), b.dims()),
            ));
        }
        if max_abs_diff(&t, b)? == 0.0 {
            continue;
        }
        if name == "model.embed_tokens.weight" && added_rows > 0 {
            let v = t.dim(0)?;
            let old = v - added_rows;
            if max_abs_diff(&t.narrow(0, 0, old)?, &b.narrow(0, 0, old)?)? == 0.0 {
                stored.insert(SPECIAL_ROWS.into(), t.narrow(0, old, added_rows)?);
                continue;
            }
        }
        stored.insert(name, t.clone());
    }
    std::fs::create_dir_all(out)?;
    let mut tensors: Vec<String> = stored.keys().cloned().collect();
    tensors.sort();
    let parameters = stored.values().map(Tensor::elem_count).sum();
    let bf16: HashMap<String, Tensor> = stored
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::BF16)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let tmp = out.join(format!("{DELTA_WEIGHTS}.tmp"));
    candle_core::safetensors::save(&bf16, &tmp)?;
    std::fs::rename(&tmp, out.join(DELTA_WEIGHTS))?;
    let manifest = DeltaManifest {
        base: relative_to(base_file, out)?,
        base_sha256: base_sha256(base_file)?,
        tensors,
        dtype: "bf16".into(),
    };
    std::fs::write(out.join(DELTA_MANIFEST), serde_json::to_string_pretty(&manifest)?)?;
    let report = trained_dir.join(TRAINING_REPORT);
    if report.is_file() {
        std::fs::copy(&report, out.join(TRAINING_REPORT))?;
    }
    let bytes = std::fs::metadata(out.join(DELTA_WEIGHTS))?.len();
    Ok(ExportReport { manifest, parameters, bytes })
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// `target` as a path relative to the folder `from` (both made absolute first).
fn relative_to(target: &Path, from: &Path) -> Result<PathBuf> {
    let target = std::fs::canonicalize(target)?;
    let from = std::fs::canonicalize(from)?;
    let t: Vec<Component> = target.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c.as_os_str());
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("data/models");
        let b = dir.path().join("models/enc");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("m.gguf"), b"x").unwrap();
        let rel = relative_to(&a.join("m.gguf"), &b).unwrap();
        assert_eq!(rel, PathBuf::from("../../data/models/m.gguf"));
        assert!(b.join(&rel).exists());
    }
}
