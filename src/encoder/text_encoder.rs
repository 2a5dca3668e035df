//! [`Encoder`]: model + tokenizer + template + pooling, the engine's text embedder.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::{DType, Device};
use sha2::{Digest, Sha256};

use super::gemm::PackedFormat;
use super::model::{BatchInputs, ForwardMode, Llama, LlamaConfig, LlamaWeights};
use super::template::{self, Padding, Pooling, Prepared, Template};
use super::tokenizer::LlmTokenizer;
use super::{Embed, EncoderFingerprint, ForwardStats, TextKind};
use crate::config::{self, Config};
use crate::error::{Error, Result};

/// Inference settings, from the `[encoder]` config section.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    pub pooling: Pooling,
    pub template: Template,
    pub padding: Padding,
    pub max_query_tokens: usize,
    pub max_passage_tokens: usize,
    pub batch_size: usize,
}

impl EncoderOptions {
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let e = &cfg.encoder;
        if e.batch_size == 0 || e.max_query_tokens == 0 || e.max_passage_tokens == 0 {
            return Err(Error::Config("encoder batch_size and max_*_tokens must be > 0".into()));
        }
        Ok(Self {
            pooling: e.pooling,
            template: e.template,
            padding: e.padding,
            max_query_tokens: e.max_query_tokens,
            max_passage_tokens: e.max_passage_tokens,
            batch_size: e.batch_size,
        })
    }
}

/// Where the weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    HuggingFace,
    /// A trained delta over a base model (see [`super::delta`]).
    Delta,
}

/// Whether the model at `path` comes from a `finetune` run (its `training.json` says so).
fn trained_for_retrieval(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path.join(super::delta::TRAINING_REPORT)) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("method")
                .and_then(|m| m.as_str())
                .map(|m| m == super::delta::RETRIEVAL_TRAINING_METHOD)
        })
        .unwrap_or(false)
}

/// Reads a plain model's config, weights and tokenizer: a Hugging Face folder or a GGUF file.
pub fn load_weights(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(LlamaConfig, LlamaWeights, LlmTokenizer)> {
    if path.is_dir() {
        super::hf::load(path, dtype, device)
    } else {
        super::gguf::load(path, dtype, device)
    }
}

/// The device `choice` names: `cuda` is an error saying why when no GPU can be opened; `auto`
/// is the GPU when one can, else the CPU.
pub fn open_device(choice: config::Device) -> Result<Device> {
    match choice {
        config::Device::Cpu => Ok(Device::Cpu),
        config::Device::Cuda => open_cuda().map_err(|why| {
            Error::InvalidInput(format!(
                "cannot use --device cuda: {why} (device cpu or auto runs on the CPU)"
            ))
        }),
        config::Device::Auto => Ok(open_cuda().unwrap_or(Device::Cpu)),
    }
}

/// GPU 0, or why not. A build without the `cuda` feature says so; with it, cudarc panics
/// when the driver library (libcuda) cannot be loaded, so that panic is caught and turned into
/// the reason rather than ending the process.
fn open_cuda() -> std::result::Result<Device, String> {
    if !cfg!(feature = "cuda") {
        return Err("this binary was built without CUDA (scripts/cuda-build.sh builds one)".into());
    }
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Device::new_cuda(0));
    std::panic::set_hook(quiet);
    match opened {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(format!("no usable GPU ({e})")),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver could not be loaded".into());
            Err(format!("no NVIDIA driver found ({})", why.lines().next().unwrap_or_default()))
        }
    }
}

/// Texts whose activation ranges fit the int8 kernel's smoothing (`model.dtype = "int8"`):
/// short, in several registers, so the channels that are always large show up.
const CALIBRATION_TEXTS: [&str; 6] = [
    "Vitamin D and bone health\nLow serum vitamin D was associated with a higher incidence of \
     hip fractures in older adults, independent of age, sex and body mass index.",
    "The mitochondrial genome encodes 13 proteins of the respiratory chain; mutations in it \
     cause disorders that affect muscle and the nervous system.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates by half \
     a percentage point, the largest increase in two decades.",
    "To install the package, run `pip install engine` and set ENGINE_HOME to the folder that \
     holds your configuration file (see README.md, section 2).",
    "What is the boiling point of water at high altitude, and why does it change?",
    "Die Stadt liegt am Rhein und hat 1,2 Millionen Einwohner. Paris est la capitale de la France.",
];

/// The Llama2Vec text encoder.
pub struct Encoder {
    model: Llama,
    tokenizer: LlmTokenizer,
    options: EncoderOptions,
    model_hash: String,
    source: PathBuf,
    format: ModelFormat,
    trained: bool,
    counters: ForwardCounters,
}

/// Running totals behind [`Embed::forward_stats`]; atomics because the server embeds from
/// several tasks.
#[derive(Default)]
struct ForwardCounters {
    sequences: AtomicU64,
    tokens: AtomicU64,
    padding: AtomicU64,
    nanos: AtomicU64,
}

impl Encoder {
    /// Loads the model named by `config.model.path` with the `[encoder]` settings.
    pub fn from_config(config: &Config) -> Result<Self> {
        let device = open_device(config.model.device)?;
        let options = EncoderOptions::from_config(config)?;
        Self::load_as(&config.model.path, options, config.model.dtype, &device)
    }

    /// Loads a model in the weight format `model.dtype` names. On a CPU with the instructions,
    /// bf16 and int8 mean f32 weights with the projections packed for the engine's kernels
    /// (candle's own CPU bf16 matmul is slower than its f32 one); int8 needs AVX-512 VNNI (an
    /// error elsewhere). Otherwise the weights are loaded in candle's dtype.
    pub fn load_as(
        path: &Path,
        options: EncoderOptions,
        dtype: config::Dtype,
        device: &Device,
    ) -> Result<Self> {
        let packed =
            match dtype {
                config::Dtype::Bf16 if device.is_cpu() && PackedFormat::Bf16.available() => {
                    Some(PackedFormat::Bf16)
                }
                config::Dtype::Int8 if device.is_cpu() && PackedFormat::Int8.available() => {
                    Some(PackedFormat::Int8)
                }
                config::Dtype::Int8 => return Err(Error::model(
                    path,
                    "model.dtype int8 runs on CPUs with AVX-512 VNNI only; this device has none \
                     (use bf16 or f32)",
                )),
                _ => None,
            };
        let candle_dtype = match dtype {
            _ if packed.is_some() => DType::F32,
            config::Dtype::F32 | config::Dtype::Int8 => DType::F32,
            config::Dtype::Bf16 => DType::BF16,
            config::Dtype::F16 => DType::F16,
        };
        let mut encoder = Self::load(path, options, candle_dtype, device)?;
        if let Some(format) = packed {
            encoder.enable_packed_kernel(format)?;
        }
        Ok(encoder)
    }

    /// Packs the model's projections for `format` as [`Encoder::load_as`] does (int8 smoothed
    /// by the ranges of the built-in calibration texts); false where the CPU or the weights do
    /// not allow it. For models built from new weights, e.g. during training.
    pub fn enable_packed_kernel(&mut self, format: PackedFormat) -> Result<bool> {
        // Only int8 fits its quantisation to activation ranges.
        let calibration = match format {
            PackedFormat::Int8 => self.calibration_inputs()?,
            PackedFormat::Bf16 => Vec::new(),
        };
        self.model.enable_packed_kernel(format, &calibration)
    }

    /// [`CALIBRATION_TEXTS`] as passages and queries, one unpadded batch each.
    fn calibration_inputs(&self) -> Result<Vec<BatchInputs>> {
        let mut batches = Vec::new();
        for text in CALIBRATION_TEXTS {
            for kind in [TextKind::Passage, TextKind::Query] {
                let p = self.prepare(text, kind)?;
                let padded = template::pad_batch(
                    &[&p],
                    self.tokenizer.pad_id(),
                    self.options.padding,
                    self.model.dtype(),
                    self.model.device(),
                )?;
                batches.push(padded.inputs);
            }
        }
        Ok(batches)
    }

    /// Loads a GGUF file or a Hugging Face folder with its weights in candle's `dtype`, no
    /// projection packed ([`Encoder::load_as`] chooses the packed kernels).
    pub fn load(
        path: &Path,
        options: EncoderOptions,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(
                path,
                "not found (run `scripts/fetch-model.sh` to fetch the default model, or set \
                 another with --model or model.path in a --config file)",
            ));
        }
        let load_plain = |p: &Path| load_weights(p, dtype, device);
        let (format, (config, weights, tokenizer)) = if super::delta::is_delta(path) {
            (ModelFormat::Delta, super::delta::load(path, dtype, device, load_plain)?)
        } else if path.is_dir() {
            (ModelFormat::HuggingFace, load_plain(path)?)
        } else {
            (ModelFormat::Gguf, load_plain(path)?)
        };
        let mut model_hash = model_hash(path)?;
        if tokenizer.added_special() > 0 {
            // The added <sN> rows are part of what this encoder computes: a change to their
            // initialisation must not pass for the same encoder.
            model_hash = hex::encode(Sha256::digest(format!(
                "{model_hash}:sN-rows:{:x}",
                super::model::SPECIAL_ROW_SEED
            )));
        }
        let trained = trained_for_retrieval(path);
        let model = Llama::new(config, weights)?;
        Ok(Self {
            model,
            tokenizer,
            options,
            model_hash,
            source: path.to_path_buf(),
            format,
            trained,
            counters: ForwardCounters::default(),
        })
    }

    /// Whether this encoder was fine-tuned for retrieval (`training.json` of a `finetune` run
    /// beside the weights). An untrained base is a weak dense retriever.
    pub fn trained(&self) -> bool {
        self.trained
    }

    /// Wraps an in-memory model (training, tests).
    pub fn from_parts(
        model: Llama,
        tokenizer: LlmTokenizer,
        options: EncoderOptions,
        model_hash: String,
    ) -> Self {
        Self {
            model,
            tokenizer,
            options,
            model_hash,
            source: PathBuf::new(),
            format: ModelFormat::HuggingFace,
            trained: false,
            counters: ForwardCounters::default(),
        }
    }

    pub fn model(&self) -> &Llama {
        &self.model
    }

    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }

    pub fn options(&self) -> &EncoderOptions {
        &self.options
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn format(&self) -> ModelFormat {
        self.format
    }

    pub fn into_parts(self) -> (Llama, LlmTokenizer, EncoderOptions) {
        (self.model, self.tokenizer, self.options)
    }

    fn max_tokens(&self, kind: TextKind) -> usize {
        match kind {
            TextKind::Query => self.options.max_query_tokens,
            TextKind::Passage => self.options.max_passage_tokens,
        }
    }

    /// Tokenizes one text with the configured template and pooling.
    pub fn prepare(&self, text: &str, kind: TextKind) -> Result<Prepared> {
        template::prepare(
            &self.tokenizer,
            text,
            kind,
            self.options.template,
            self.options.pooling,
            self.max_tokens(kind),
        )
    }

    /// Embeds prepared texts as one padded batch (callers choose the grouping).
    pub fn embed_batch(&self, items: &[&Prepared]) -> Result<Vec<Vec<f32>>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let batch = template::pad_batch(
            items,
            self.tokenizer.pad_id(),
            self.options.padding,
            self.model.dtype(),
            self.model.device(),
        )?;
        let started = Instant::now();
        let hidden = self.model.forward(&batch.inputs, ForwardMode::Fast)?;
        let pooled = template::pool(&hidden, &batch.pool_weights)?;
        let tokens: usize = items.iter().map(|p| p.ids.len()).sum();
        let longest = items.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let c = &self.counters;
        c.sequences.fetch_add(items.len() as u64, Ordering::Relaxed);
        c.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        c.padding.fetch_add((longest * items.len() - tokens) as u64, Ordering::Relaxed);
        c.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(pooled)
    }

    /// Embeds prepared texts in length-sorted batches of `batch_size`, returning input order.
    pub fn embed_prepared(&self, items: &[Prepared]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
        let mut out = vec![Vec::new(); items.len()];
        for chunk in order.chunks(self.options.batch_size) {
            let group: Vec<&Prepared> = chunk.iter().map(|&i| &items[i]).collect();
            for (&i, v) in chunk.iter().zip(self.embed_batch(&group)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

impl Embed for Encoder {
    fn dim(&self) -> usize {
        self.model.config.hidden_size
    }

    fn fingerprint(&self) -> EncoderFingerprint {
        EncoderFingerprint {
            model_hash: self.model_hash.clone(),
            pooling: self.options.pooling.to_string(),
            template: self.options.template.to_string(),
            dim: self.dim(),
            trained: self.trained,
            model_path: std::fs::canonicalize(&self.source).ok(),
        }
    }

    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let prepared = texts.iter().map(|t| self.prepare(t, kind)).collect::<Result<Vec<_>>>()?;
        let truncated = prepared.iter().filter(|p| p.truncated).count();
        if truncated > 0 {
            tracing::warn!(
                truncated,
                max_tokens = self.max_tokens(kind),
                "texts longer than the token limit were truncated"
            );
        }
        self.embed_prepared(&prepared)
    }

    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        Ok(self.tokenizer.encode_with_offsets(text)?.1)
    }

    fn forward_stats(&self) -> ForwardStats {
        let c = &self.counters;
        ForwardStats {
            sequences: c.sequences.load(Ordering::Relaxed),
            tokens: c.tokens.load(Ordering::Relaxed),
            padding: c.padding.load(Ordering::Relaxed),
            seconds: c.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }

    fn max_passage_tokens(&self) -> usize {
        self.options.max_passage_tokens
    }
}

/// A stable identity for model files. Files of many GB would take minutes to hash, so each
/// file contributes its name, size and first and last 4 MiB: enough to tell checkpoints apart.
pub fn model_hash(path: &Path) -> Result<String> {
    const SAMPLE: u64 = 4 << 20;
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".safetensors")
                    || name == "config.json"
                    || name == "tokenizer.json"
                    || name == super::delta::DELTA_MANIFEST
            })
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let mut h = Sha256::new();
    let mut buf = Vec::new();
    for f in files {
        let mut file = std::fs::File::open(&f)?;
        let len = file.metadata()?.len();
        h.update(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        h.update(len.to_le_bytes());
        buf.clear();
        file.by_ref().take(SAMPLE).read_to_end(&mut buf)?;
        h.update(&buf);
        if len > 2 * SAMPLE {
            file.seek(SeekFrom::Start(len - SAMPLE))?;
            buf.clear();
            file.take(SAMPLE).read_to_end(&mut buf)?;
            h.update(&buf);
        }
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::testing::write_tiny_model;

    fn options(pooling: Pooling, template: Template, padding: Padding) -> EncoderOptions {
        EncoderOptions {
            pooling,
            template,
            padding,
            max_query_tokens: 64,
            max_passage_tokens: 64,
            batch_size: 8,
        }
    }

    /// Without a GPU, `cuda` is an error that names the way out and `auto` is the CPU, in the
    /// CPU build and in the CUDA build alike (where cudarc panics on a missing libcuda).
    #[test]
    fn cuda_without_a_gpu_is_a_clear_error_and_auto_falls_back_to_the_cpu() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            eprintln!("skipped: this machine has an NVIDIA GPU");
            return;
        }
        let err = open_device(config::Device::Cuda).unwrap_err().to_string();
        assert!(err.contains("cannot use --device cuda") && err.contains("cpu or auto"), "{err}");
        assert!(open_device(config::Device::Auto).unwrap().is_cpu());
    }

    fn tiny(pooling: Pooling, padding: Padding) -> (tempfile::TempDir, Encoder) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_tiny_model(&dir.path().join("m"), 7).unwrap();
        let enc = Encoder::load(
            &path,
            options(pooling, Template::Llama2Vec, padding),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        (dir, enc)
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// The counters behind indexing's tok/s: real tokens (template included) and padding.
    #[test]
    fn forward_stats_count_tokens_and_padding_of_each_batch() {
        let (_d, enc) = tiny(Pooling::Llama2Vec, Padding::Left);
        let texts = ["a", "a somewhat longer text here"];
        let lengths: Vec<u64> = texts
            .iter()
            .map(|t| enc.prepare(t, TextKind::Passage).unwrap().ids.len() as u64)
            .collect();
        let before = enc.forward_stats();
        enc.embed(&texts, TextKind::Passage).unwrap();
        let s = enc.forward_stats().since(&before);
        assert_eq!((s.sequences, s.tokens), (2, lengths[0] + lengths[1]));
        assert_eq!(s.padding, lengths[1] - lengths[0]);
        assert!(s.seconds > 0.0 && s.tokens_per_s() > 0.0);
    }

    #[test]
    fn embedding_is_independent_of_batch_company_and_padding_side() {
        let texts = ["a", "a somewhat longer text here", "mid length text", "x y z w v u t s r q"];
        for pooling in [Pooling::Llama2Vec, Pooling::Last, Pooling::Mean] {
            let mut reference: Option<Vec<Vec<f32>>> = None;
            for padding in [Padding::Left, Padding::Right] {
                let (_d, enc) = tiny(pooling, padding);
                let batched = enc.embed(&texts, TextKind::Passage).unwrap();
                for (t, v) in texts.iter().zip(&batched) {
                    let alone = enc.embed(&[t], TextKind::Passage).unwrap();
                    let d = max_diff(&alone[0], v);
                    assert!(d <= 1e-4, "{pooling:?} {padding:?} {t:?}: diff {d}");
                    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-4);
                }
                if let Some(r) = &reference {
                    for (a, b) in r.iter().zip(&batched) {
                        assert!(max_diff(a, b) <= 1e-4, "left and right padding differ");
                    }
                }
                reference = Some(batched);
            }
        }
    }

    /// Recomputes the pooled vector by hand from the hidden states at the special-token ids;
    /// an off-by-one in the pooling positions would pool a prompt token and fail this.
    #[test]
    fn llama2vec_pooling_reads_exactly_the_special_positions() {
        let (_d, enc) = tiny(Pooling::Llama2Vec, Padding::Left);
        for kind in [TextKind::Passage, TextKind::Query] {
            let p = enc.prepare("the quick brown fox", kind).unwrap();
            let specials = template::special_ids(enc.tokenizer(), kind);
            let positions: Vec<usize> =
                (0..p.ids.len()).filter(|&i| specials.contains(&p.ids[i])).collect();
            assert_eq!(positions.len(), 8);
            assert_eq!(positions, p.pool);
            let batch =
                template::pad_batch(&[&p], 0, Padding::Left, DType::F32, &Device::Cpu).unwrap();
            let hidden = enc.model().forward(&batch.inputs, ForwardMode::Fast).unwrap();
            let rows = hidden.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            let mut mean = vec![0f32; rows[0].len()];
            for &i in &positions {
                for (m, x) in mean.iter_mut().zip(&rows[i]) {
                    *m += x / 8.0;
                }
            }
            let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
            mean.iter_mut().for_each(|x| *x /= n);
            let got = enc.embed(&["the quick brown fox"], kind).unwrap();
            assert!(max_diff(&got[0], &mean) < 1e-5);
            // Shifting the window by one position gives a different vector.
            let mut shifted = vec![0f32; rows[0].len()];
            for &i in &positions {
                for (m, x) in shifted.iter_mut().zip(&rows[i - 1]) {
                    *m += x;
                }
            }
            let n = shifted.iter().map(|x| x * x).sum::<f32>().sqrt();
            shifted.iter_mut().for_each(|x| *x /= n);
            assert!(max_diff(&got[0], &shifted) > 1e-3);
        }
    }

    #[test]
    fn query_and_passage_templates_differ() {
        let (_d, enc) = tiny(Pooling::Llama2Vec, Padding::Left);
        let q = enc.prepare("hello", TextKind::Query).unwrap();
        let p = enc.prepare("hello", TextKind::Passage).unwrap();
        assert_ne!(q.ids, p.ids);
        assert_eq!(enc.tokenizer().added_special(), 16);
        assert_eq!(enc.model().config.vocab_size, crate::encoder::testing::TINY_VOCAB + 16);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let (_d, enc) = tiny(Pooling::Llama2Vec, Padding::Left);
        let err = enc.embed(&["  "], TextKind::Query).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let long = "word ".repeat(200);
        let p = enc.prepare(&long, TextKind::Query).unwrap();
        assert!(p.truncated);
        assert_eq!(enc.embed(&[long.as_str()], TextKind::Query).unwrap().len(), 1);
        let missing = Encoder::load(
            Path::new("/nonexistent/model.gguf"),
            options(Pooling::Mean, Template::None, Padding::Left),
            DType::F32,
            &Device::Cpu,
        );
        assert!(matches!(missing, Err(Error::Model { .. })));
        let wrong = template::prepare(
            enc.tokenizer(),
            "x",
            TextKind::Query,
            Template::None,
            Pooling::Llama2Vec,
            8,
        );
        assert!(matches!(wrong, Err(Error::InvalidInput(_))));
    }

    #[test]
    fn unsupported_architecture_and_bad_shapes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_tiny_model(&dir.path().join("m"), 1).unwrap();
        let cfg_path = path.join("config.json");
        let original = std::fs::read_to_string(&cfg_path).unwrap();
        std::fs::write(
            &cfg_path,
            original
                .replace("\"llama\"", "\"gpt2\"")
                .replace("LlamaForCausalLM", "GPT2LMHeadModel"),
        )
        .unwrap();
        let opts = options(Pooling::Mean, Template::None, Padding::Left);
        let err = Encoder::load(&path, opts.clone(), DType::F32, &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("unsupported architecture"), "{err}");
        std::fs::write(
            &cfg_path,
            original.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
        )
        .unwrap();
        let err = Encoder::load(&path, opts, DType::F32, &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("shape"), "{err}");
    }
}
