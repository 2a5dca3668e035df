//! Checks on the real default model. They skip, saying so, when the model has not been fetched
//! (`scripts/fetch-model.sh`); CI fetches it.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use engine::config::Dtype;
use engine::encoder::gemm::PackedFormat;
use engine::encoder::model::{BatchInputs, ForwardMode};
use engine::encoder::{Encoder, EncoderOptions, Padding, Pooling, Template};

fn model_path() -> Option<PathBuf> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: real model not found at {} (run scripts/fetch-model.sh)", p.display());
        None
    }
}

fn embed_cli(model: &Path, args: &[&str]) -> Vec<Vec<f32>> {
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("embed")
        .arg("--model")
        .arg(model)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

#[test]
fn cli_embed_gives_deterministic_576d_unit_vectors() {
    let Some(model) = model_path() else { return };
    for pooling in ["llama2vec", "last", "mean"] {
        let args =
            ["--kind", "query", "--pooling", pooling, "a first text", "a second, longer text"];
        let a = embed_cli(&model, &args);
        let b = embed_cli(&model, &args);
        assert_eq!(a.len(), 2);
        assert_eq!(a, b, "{pooling}: two runs differ");
        for v in &a {
            assert_eq!(v.len(), 576);
            let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "{pooling}: norm {n}");
        }
        assert_ne!(a[0], a[1]);
    }
}

/// The engine's tokenizer and forward against llama.cpp on the same GGUF
/// (tests/fixtures/llamacpp_hidden.json, made by scripts/make_reference_fixture.py).
///
/// Tolerance: llama.cpp multiplies Q4_1 weights with activations quantized to 8 bits (q8_1), the
/// engine dequantizes the weights to f32 and keeps f32 activations, so the two differ by
/// quantization noise accumulated over 30 layers. Measured: per-position cosine 0.9977-0.9998 and
/// a relative L1 difference of 3% at position 0 (which attends only to itself, so that 3% is
/// pure quantization noise) to 7% elsewhere, flat across positions (a RoPE or mask error would
/// grow with position). Bounds: cosine >= 0.995 at every position, relative L1 < 0.08 per text.
#[test]
fn hidden_states_match_llama_cpp() {
    let Some(model) = model_path() else { return };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llamacpp_hidden.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let opts = EncoderOptions {
        pooling: Pooling::Mean,
        template: Template::None,
        padding: Padding::Left,
        max_query_tokens: 512,
        max_passage_tokens: 512,
        batch_size: 8,
    };
    let enc = Encoder::load(&model, opts, DType::F32, &Device::Cpu).unwrap();
    for case in data["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want_ids: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let ids = enc.tokenizer().encode(text).unwrap();
        assert_eq!(ids, want_ids, "tokenization differs from llama.cpp for {text:?}");
        let n = ids.len();
        let inputs = BatchInputs::causal(
            &[ids],
            &[(0..n as u32).collect()],
            &[vec![true; n]],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let hidden = enc.model().forward(&inputs, ForwardMode::Fast).unwrap();
        let rows = hidden.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let want = case["hidden"].as_array().unwrap();
        let (mut diff, mut mag) = (0f64, 0f64);
        for (pos, (got, want)) in rows.iter().zip(want).enumerate() {
            let want: Vec<f32> =
                want.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            let cos = dot / (norm(got) * norm(&want));
            assert!(cos >= 0.995, "{text:?} position {pos}: cosine {cos}");
            diff += got.iter().zip(&want).map(|(a, b)| (a - b).abs() as f64).sum::<f64>();
            mag += want.iter().map(|x| x.abs() as f64).sum::<f64>();
        }
        let rel = diff / mag;
        eprintln!("{text:?}: mean |diff| / mean |x| = {rel:.4}");
        assert!(rel < 0.08, "{text:?}: relative difference {rel}");
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// The packed kernels against the f32 reference on 100 real passages (SciFact's first 100
/// documents, 128 tokens each at most), for the base model and the shipped trained encoder:
/// every bf16 embedding's cosine to its f32 twin must be >= 0.999 (measured 0.99998 base,
/// 0.99993 shipped, the attention's `P V` in bf16 included). int8 is held to what it measured
/// (docs/results.md): >= 0.999 on the base (0.99908), whose llama2vec vectors share one large
/// direction, and >= 0.993 on the trained encoder (0.99595), where it falls short of 0.999.
#[test]
fn packed_kernel_embeddings_match_f32_on_real_passages() {
    if model_path().is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = root.join(engine::config::Config::default().model.path);
    let mut failures = Vec::new();
    for (model, int8_floor) in [(model_path().unwrap(), 0.999), (shipped, 0.993)] {
        failures.extend(packed_kernels_match_f32(&model, int8_floor));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The bounds `model` misses, after measuring every format.
fn packed_kernels_match_f32(model: &Path, int8_floor: f32) -> Vec<String> {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/scifact/corpus.jsonl");
    let Ok(text) = std::fs::read_to_string(&corpus) else {
        eprintln!("SKIPPED: {} not found", corpus.display());
        return Vec::new();
    };
    let passages: Vec<String> = text
        .lines()
        .take(100)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or(""))
        })
        .collect();
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let pooling = Pooling::Llama2Vec;
    let opts = EncoderOptions {
        pooling,
        template: Template::Llama2Vec,
        padding: Padding::Left,
        max_query_tokens: 64,
        max_passage_tokens: 128,
        batch_size: 16,
    };
    let f32_enc = Encoder::load(model, opts.clone(), DType::F32, &Device::Cpu).unwrap();
    let a =
        engine::encoder::Embed::embed(&f32_enc, &refs, engine::encoder::TextKind::Passage).unwrap();
    drop(f32_enc);
    let formats =
        [(Dtype::Bf16, PackedFormat::Bf16, 0.999), (Dtype::Int8, PackedFormat::Int8, int8_floor)];
    let mut failures = Vec::new();
    for (dtype, format, floor) in formats {
        if !format.available() {
            eprintln!("SKIPPED {dtype}: this CPU lacks the kernel's instructions");
            continue;
        }
        let enc = Encoder::load_as(model, opts.clone(), dtype, &Device::Cpu).unwrap();
        assert_eq!(enc.model().packed_format(), Some(format));
        let b =
            engine::encoder::Embed::embed(&enc, &refs, engine::encoder::TextKind::Passage).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
            .fold(1.0f32, f32::min);
        let name = model.display();
        eprintln!("{name} {pooling:?}: min cosine {dtype} vs f32 over 100 passages = {worst:.5}");
        if worst < floor {
            failures.push(format!("{name} {pooling:?} {dtype}: min cosine {worst} < {floor}"));
        }
    }
    failures
}

/// The encoder a new user gets (the default `model.path`): it loads over the fetched base,
/// says it was trained, gives unit 576-d vectors, and ranks an answering passage above an
/// unrelated one.
#[test]
fn shipped_encoder_is_the_default_and_is_trained() {
    if model_path().is_none() {
        return;
    }
    let mut config = engine::config::Config::default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        config.model.path.starts_with("encoders"),
        "default model.path {} is not the shipped encoder",
        config.model.path.display()
    );
    config.model.path = root.join(&config.model.path);
    config.model.dtype = engine::config::Dtype::Bf16;
    let enc = Encoder::from_config(&config).unwrap();
    let fp = engine::encoder::Embed::fingerprint(&enc);
    assert!(fp.trained, "the shipped encoder must record that it was trained");
    assert_eq!((fp.dim, fp.pooling.as_str()), (576, "llama2vec"));
    use engine::encoder::{Embed, TextKind};
    let q = enc
        .embed(&["Does vitamin D deficiency increase the risk of fractures?"], TextKind::Query)
        .unwrap();
    let p = enc
        .embed(
            &[
                "Vitamin D and bone health\nLow serum vitamin D was associated with a higher incidence of hip fractures in older adults.",
                "Stock market volatility\nEquity prices fluctuated strongly after the central bank announcement.",
            ],
            TextKind::Passage,
        )
        .unwrap();
    for v in q.iter().chain(&p) {
        assert_eq!(v.len(), 576);
        let n = norm(v);
        assert!((n - 1.0).abs() < 1e-3, "norm {n}");
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (relevant, unrelated) = (dot(&q[0], &p[0]), dot(&q[0], &p[1]));
    assert!(relevant > unrelated + 0.05, "relevant {relevant} vs unrelated {unrelated}");
}
