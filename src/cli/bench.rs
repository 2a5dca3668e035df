//! `engine bench ...`: performance measurements (never timed tests).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use engine::config::Dtype;
use engine::index::{bench, AnnParams, Backend};
use engine::train::bench::Stage;
use engine::train::Trainable;

use super::resolve::EncoderFlags;
use super::Ctx;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Encoder tokens/s (32 x 128 passages) and 16-token query latency, per weight format,
    /// optionally beside llama.cpp on the same GGUF.
    Encode(EncodeBenchArgs),
    /// ANN build time and QPS at recall@10 >= 0.95.
    Ann(AnnArgs),
    /// Filtered top-10 recall, hits returned and QPS at 1 %, 10 % and 50 % selectivity,
    /// through the real search path, per ANN backend (synthetic corpus).
    Filter(FilterBenchArgs),
    /// Training step (forward + backward) tokens/s and peak RSS of `engine adapt` and
    /// `engine finetune`.
    Train(TrainBenchArgs),
    /// HTTP /search requests/s and p50/p99 at 1, 4 and 16 concurrent clients (loopback),
    /// beside the query encoder alone.
    Serve(ServeBenchArgs),
}

#[derive(Args)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// Synthetic documents indexed into a temporary database first.
    #[arg(long, default_value_t = 200)]
    pub docs: usize,
    /// Requests per concurrency level (at most).
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Seconds per concurrency level (at most).
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Client concurrencies, comma separated.
    #[arg(long, default_value = "1,4,16")]
    pub concurrency: String,
}

#[derive(Args)]
pub struct FilterBenchArgs {
    /// Synthetic documents (one random unit vector each).
    #[arg(long, default_value_t = 20_000)]
    pub n: usize,
    /// Vector dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Queries per backend, mode and selectivity.
    #[arg(long, default_value_t = 100)]
    pub queries: usize,
    /// ANN backends, comma separated [default: every one built in].
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<Backend>>,
    /// Percent of the corpus each filter keeps, comma separated.
    #[arg(long, default_value = "1,10,50")]
    pub selectivity: String,
    /// Seed of the corpus and queries.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Args)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// Trainable modes to measure, comma separated (all, last:N, lora).
    #[arg(long, value_delimiter = ',', default_value = "last:4,lora,all")]
    pub trainable: Vec<Trainable>,
    /// Stages to measure, comma separated: adapt (EBAE + EBAR + LM), finetune (InfoNCE).
    #[arg(long, default_value = "adapt,finetune")]
    pub stages: String,
    /// Sequences per step: passages for adapt, queries for finetune.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Passage tokens per sequence (the template's tokens come on top).
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Passages per query in finetune (1 positive + negatives), as `train.group_size`.
    #[arg(long, default_value_t = 2)]
    pub group: usize,
    /// Query tokens in finetune.
    #[arg(long, default_value_t = 32)]
    pub query_tokens: usize,
    /// Measured steps per mode (after one warm-up).
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// Whether the `<sN>` embedding rows train, comma separated: train (the reference), frozen
    /// (`last:N` then back-propagates through N layers only).
    #[arg(long, default_value = "train,frozen")]
    pub special_rows: String,
    /// Model dtype: f32, bf16 or int8 (the packed bf16 / int8 kernel runs the frozen layers of
    /// `last:N` with frozen rows; trained weights stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
}

#[derive(Args)]
pub struct EncodeBenchArgs {
    #[command(flatten)]
    pub encoder: EncoderFlags,
    /// Weight formats to measure, comma separated (int8 is skipped, saying so, on a CPU
    /// without AVX-512 VNNI).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16,int8")]
    pub dtypes: Vec<Dtype>,
    /// Passages per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per passage.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Tokens of the latency query.
    #[arg(long, default_value_t = 16)]
    pub query_tokens: usize,
    /// Rounds; engine and llama.cpp alternate within each round and medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Python interpreter with llama-cpp-python installed (see scripts/llamacpp-venv.sh);
    /// when given, llama.cpp is measured on the same GGUF in the same run.
    #[arg(long)]
    pub llama_cpp_python: Option<PathBuf>,
}

#[derive(Args)]
pub struct AnnArgs {
    /// Number of random unit vectors indexed.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Vector dimension.
    #[arg(long, default_value_t = 576)]
    pub dim: usize,
    /// Number of queries (random unit vectors, not in the index).
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Quick run: 10k vectors, 100 queries.
    #[arg(long)]
    pub quick: bool,
    /// Recall@10 the graph indexes must reach.
    #[arg(long, default_value_t = 0.95)]
    pub target: f64,
    /// FAISS factory strings to compare (repeatable).
    #[arg(long = "faiss-factory", default_values_t = ["HNSW32".to_string(), "Flat".to_string()])]
    pub faiss_factories: Vec<String>,
    /// Seed of the random vectors and queries.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Vectors: random (uniform on the sphere, the worst case) or clustered (around random
    /// centres, closer to real embeddings).
    #[arg(long, default_value = "random")]
    pub data: String,
    /// Cluster count for `--data clustered` (default: one per 100 vectors).
    #[arg(long)]
    pub clusters: Option<usize>,
    /// Noise norm relative to the unit centre for `--data clustered`.
    #[arg(long, default_value_t = 1.0)]
    pub spread: f32,
    /// hnsw_rs M (default: index.hnsw_m).
    #[arg(long)]
    pub hnsw_m: Option<usize>,
    /// hnsw_rs ef_construction (default: index.hnsw_ef_construction).
    #[arg(long)]
    pub ef_construction: Option<usize>,
}

pub fn run(ctx: &Ctx, args: BenchArgs) -> Result<()> {
    match args.what {
        BenchWhat::Encode(a) => encode(ctx, a),
        BenchWhat::Serve(a) => serve(ctx, a),
        BenchWhat::Ann(a) => run_ann(ctx, a),
        BenchWhat::Filter(a) => run_filter(ctx, a),
        BenchWhat::Train(a) => run_train(ctx, a),
    }
}

fn encode(ctx: &Ctx, a: EncodeBenchArgs) -> Result<()> {
    use engine::encoder::bench::{measure_encoder, median, EncodeShape};
    let cfg = a.encoder.apply(&ctx.config);
    let threads = rayon::current_num_threads();
    let shape = EncodeShape { batch: a.batch, tokens: a.tokens, query_tokens: a.query_tokens };
    let mut encoders = Vec::new();
    for &d in &a.dtypes {
        if d == Dtype::Int8 && !engine::encoder::gemm::PackedFormat::Int8.available() {
            eprintln!("skipping int8: this CPU has no AVX-512 VNNI");
            continue;
        }
        let mut c = cfg.clone();
        c.model.dtype = d;
        let enc = super::embed::load_encoder(&c)?;
        encoders.push((format!("engine {d}"), enc));
    }
    let mut results: Vec<(String, Vec<f64>, Vec<f64>)> =
        encoders.iter().map(|(n, _)| (n.clone(), vec![], vec![])).collect();
    let mut llama: (Vec<f64>, Vec<f64>) = (vec![], vec![]);
    for round in 0..a.rounds {
        for (i, (_, enc)) in encoders.iter().enumerate() {
            let m = measure_encoder(enc, &shape)?;
            results[i].1.push(m.tokens_per_s);
            results[i].2.push(m.query_ms);
        }
        if let Some(py) = &a.llama_cpp_python {
            // llama.cpp reads the GGUF itself: a trained delta is timed against its base file.
            let gguf = if engine::encoder::delta::is_delta(&cfg.model.path) {
                engine::encoder::delta::base_path(&cfg.model.path)?
            } else {
                cfg.model.path.clone()
            };
            let m = llama_cpp(py, &gguf, &shape, threads)?;
            llama.0.push(m.0);
            llama.1.push(m.1);
        }
        eprintln!("round {}/{} done", round + 1, a.rounds);
    }
    if !llama.0.is_empty() {
        results.push(("llama.cpp (same GGUF)".into(), llama.0, llama.1));
    }
    println!(
        "encode bench: {} x {} tokens, query {} tokens, {threads} threads, median of {} rounds",
        a.batch, a.tokens, a.query_tokens, a.rounds
    );
    println!("{:<24} {:>12} {:>14}", "backend", "tok/s", "query p50 ms");
    let mut json = Vec::new();
    for (name, tps, ms) in &mut results {
        let (t, q) = (median(tps), median(ms));
        println!("{name:<24} {t:>12.1} {q:>14.1}");
        json.push(serde_json::json!({"backend": name, "tokens_per_s": t, "query_p50_ms": q}));
    }
    println!("{}", serde_json::to_string(&json)?);
    Ok(())
}

/// Runs scripts/bench_llamacpp.py once and returns (tokens/s, query p50 ms).
fn llama_cpp(
    python: &std::path::Path,
    model: &std::path::Path,
    shape: &engine::encoder::bench::EncodeShape,
    threads: usize,
) -> Result<(f64, f64)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_llamacpp.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--model", &model.to_string_lossy()])
        .args(["--batch", &shape.batch.to_string(), "--tokens", &shape.tokens.to_string()])
        .args(["--query-tokens", &shape.query_tokens.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        anyhow::bail!("llama.cpp bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(
        out.stdout.rsplit(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap_or_default(),
    )
    .context("parsing llama.cpp bench output")?;
    Ok((
        v["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
        v["query_p50_ms"].as_f64().unwrap_or(f64::NAN),
    ))
}

fn serve(ctx: &Ctx, a: ServeBenchArgs) -> Result<()> {
    let config = a.encoder.apply(&ctx.config);
    let concurrency = a
        .concurrency
        .split(',')
        .map(|s| s.trim().parse::<usize>().context("--concurrency takes numbers like 1,4,16"))
        .collect::<Result<Vec<_>>>()?;
    if concurrency.iter().any(|&c| c == 0 || c > 256) {
        anyhow::bail!("--concurrency values must be in 1..=256");
    }
    let opts = engine::server::bench::ServeBenchOptions {
        config,
        documents: a.docs.clamp(1, 100_000),
        concurrency,
        requests: a.requests.clamp(1, 100_000),
        max_seconds: a.seconds.clamp(1.0, 600.0),
    };
    let reports = engine::server::bench::run(&opts, |l| eprintln!("{l}"))?;
    println!(
        "serve bench: {} ({} threads), {} docs, max_batch {}, max_wait_ms {}",
        opts.config.model.path.display(),
        rayon::current_num_threads(),
        opts.documents,
        opts.config.server.max_batch,
        opts.config.server.max_wait_ms
    );
    print!("{}", engine::server::bench::format_table(&reports));
    println!("{}", serde_json::to_string(&reports)?);
    Ok(())
}

fn run_ann(ctx: &Ctx, a: AnnArgs) -> Result<()> {
    let (n, queries) = if a.quick { (10_000, 100) } else { (a.n, a.queries) };
    let clusters = a.clusters.unwrap_or(n / 100);
    let data = match a.data.as_str() {
        "random" => bench::BenchData::Random,
        "clustered" if clusters > 0 && a.spread.is_finite() && a.spread >= 0.0 => {
            bench::BenchData::Clustered { clusters, spread: a.spread }
        }
        "clustered" => anyhow::bail!("--clusters must be > 0 and --spread a number >= 0"),
        other => anyhow::bail!("--data must be random or clustered, got {other:?}"),
    };
    let mut params = AnnParams::from_config(&ctx.config.index);
    params.hnsw_m = a.hnsw_m.unwrap_or(params.hnsw_m);
    params.hnsw_ef_construction = a.ef_construction.unwrap_or(params.hnsw_ef_construction);
    let opts = bench::AnnBenchOptions {
        n,
        dim: a.dim,
        queries,
        k: 10,
        target_recall: a.target,
        seed: a.seed,
        params,
        faiss_factories: a.faiss_factories,
        data,
    };
    let report = bench::run(&opts, |line| eprintln!("{line}"))?;
    println!("{}", bench::format_table(&report));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn run_filter(ctx: &Ctx, a: FilterBenchArgs) -> Result<()> {
    use engine::search::filter_bench::{self, FilterBenchOptions};
    let backends = match a.backends {
        Some(list) => list.into_iter().map(Backend::compiled_in).collect::<Result<Vec<_>, _>>()?,
        None => Backend::available(),
    };
    let selectivities = a
        .selectivity
        .split(',')
        .map(|s| s.trim().parse::<usize>().ok().filter(|p| (1..=100).contains(p)))
        .collect::<Option<Vec<_>>>()
        .context("--selectivity must list whole percents from 1 to 100")?;
    let opts = FilterBenchOptions {
        n: a.n,
        dim: a.dim,
        queries: a.queries,
        k: 10,
        seed: a.seed,
        backends,
        params: AnnParams::from_config(&ctx.config.index),
        selectivities,
        fusion: engine::fusion::Fusion::from_config(&ctx.config.eval)?,
    };
    let dir = std::env::temp_dir().join(format!("engine-bench-filter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rows = filter_bench::run(&opts, &dir, |l| eprintln!("{l}"));
    let _ = std::fs::remove_dir_all(&dir);
    let rows = rows?;
    print!("{}", filter_bench::format_table(&rows, opts.k));
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}

/// Forward + backward tokens/s of the adaptation loss per trainable mode and special-row
/// choice (trained weights are f32: the bf16 kernel has no backward).
fn run_train(ctx: &Ctx, a: TrainBenchArgs) -> Result<()> {
    let mut cfg = a.encoder.apply(&ctx.config);
    if !matches!(a.dtype, Dtype::F32 | Dtype::Bf16 | Dtype::Int8) {
        anyhow::bail!("--dtype must be f32, bf16 or int8, got {}", a.dtype);
    }
    cfg.model.dtype = a.dtype;
    let rows: Vec<bool> = a
        .special_rows
        .split(',')
        .map(|r| match r.trim() {
            "train" => Ok(true),
            "frozen" => Ok(false),
            other => Err(anyhow::anyhow!("--special-rows takes train,frozen; got {other:?}")),
        })
        .collect::<Result<_>>()?;
    if a.group == 0 || a.batch == 0 || a.tokens == 0 || a.query_tokens == 0 {
        anyhow::bail!("--batch, --tokens, --group and --query-tokens must be at least 1");
    }
    let stages: Vec<Stage> = a
        .stages
        .split(',')
        .map(|s| match s.trim() {
            "adapt" => Ok(Stage::Adapt),
            "finetune" => Ok(Stage::Finetune { group: a.group, query_tokens: a.query_tokens }),
            other => Err(anyhow::anyhow!("--stages takes adapt,finetune; got {other:?}")),
        })
        .collect::<Result<_>>()?;
    let encoder = super::embed::load_encoder(&cfg)?;
    println!(
        "train bench: batch {} x {} passage tokens (finetune: group {}, {}-token queries), {}, \
         {} threads, median of {} steps",
        a.batch,
        a.tokens,
        a.group,
        a.query_tokens,
        a.dtype,
        rayon::current_num_threads(),
        a.steps
    );
    println!(
        "{:<9} {:<10} {:<8} {:>7} {:>12} {:>8} {:>8} {:>8} {:>9}",
        "stage", "trainable", "<sN>", "frozen", "params", "fwd s", "bwd s", "tok/s", "peak RSS"
    );
    let mut all = Vec::new();
    for &stage in &stages {
        for &mode in &a.trainable {
            for &train_rows in &rows {
                let m = engine::train::bench::measure_step(
                    &encoder, stage, mode, train_rows, a.batch, a.tokens, a.steps,
                )?;
                let rss =
                    m.peak_rss_bytes.map_or("-".into(), |b| format!("{:.2} GB", b as f64 / 1e9));
                println!(
                    "{:<9} {:<10} {:<8} {:>7} {:>12} {:>8.2} {:>8.2} {:>8.1} {:>9}",
                    m.stage,
                    m.trainable,
                    if train_rows { "train" } else { "frozen" },
                    m.frozen_layers,
                    m.trainable_params,
                    m.forward_s,
                    m.backward_s,
                    m.tokens_per_s,
                    rss
                );
                all.push(m);
            }
        }
    }
    println!("{}", serde_json::to_string(&all)?);
    Ok(())
}
