//! Command-line interface. Each subcommand's flags and handler live in their own file; this one
//! only declares them, loads the configuration and sets up logging and threads.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod adapt;
mod bench;
mod copy;
mod embed;
mod eval;
mod index;
mod location;
mod resolve;
mod search;
mod serve;
mod snapshot;

#[derive(Parser)]
#[command(
    name = "engine",
    version,
    about = "Dense retrieval with a Llama2Vec LLM encoder: embed, index, serve, adapt, evaluate.",
    long_about = None
)]
pub struct Cli {
    /// TOML file overlaid on configs/default.toml (only the keys it sets change).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Compute threads (0 = one per core); overrides model.threads.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// How log lines are written on stderr (json: one object per line; the server's ready
    /// line and request log too) [default: server.log_format].
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<engine::config::LogFormat>,
    /// More log output (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts and print one JSON object per line: {"text", "embedding"}.
    Embed(embed::EmbedArgs),
    /// Print the model's architecture, parameter count, dims, vocabulary, pooling and device.
    Info(embed::InfoArgs),
    /// Embed a corpus (BEIR folder, JSONL or folder of .txt/.md) into a database.
    Index(index::IndexArgs),
    /// Delete documents (and their passages) from a database.
    Delete(index::DeleteArgs),
    /// Report recall@10 of the database's ANN index against an exact scan.
    Check(index::CheckArgs),
    /// Copy a database folder into a PostgreSQL store, vectors included (nothing is embedded).
    Copy(copy::CopyArgs),
    /// Search a database and print JSON hits.
    Search(search::SearchArgs),
    /// Serve the HTTP API and the browser UI.
    Serve(serve::ServeArgs),
    /// Write the database (store, vectors, ANN and BM25 indexes, manifest) as one archive file.
    Snapshot(snapshot::SnapshotArgs),
    /// Restore an archive of `engine snapshot` (or POST /snapshots) into a new database folder.
    Restore(snapshot::RestoreArgs),
    /// Llama2Vec unsupervised adaptation (EBAE + EBAR) of a base LLM on raw text.
    Adapt(adapt::AdaptArgs),
    /// Contrastive (InfoNCE) fine-tuning of an encoder on query-passage pairs.
    Finetune(adapt::FinetuneArgs),
    /// Write a trained encoder as a small delta over its base (changed tensors only).
    ExportDelta(adapt::ExportDeltaArgs),
    /// BEIR-style evaluation: nDCG@10, MRR@10, Recall@10/100, MAP@100.
    Eval(eval::EvalArgs),
    /// Benchmarks: encoder speed, ANN build/QPS, serving, training step.
    Bench(bench::BenchArgs),
}

/// Shared handle the subcommands get: the resolved configuration.
pub struct Ctx {
    pub config: engine::config::Config,
    /// Which encoder settings the `--config` file chose (a database's manifest fills the rest).
    pub choices: resolve::ConfigChoices,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut config = engine::config::Config::load(cli.config.as_deref())?;
    config.server.log_format = cli.log_format.unwrap_or(config.server.log_format);
    init_logging(cli.verbose, config.server.log_format == engine::config::LogFormat::Json);
    if let Some(t) = cli.threads {
        config.model.threads = t;
    }
    let choices = resolve::ConfigChoices::from_file(cli.config.as_deref(), &mut config)?;
    init_threads(config.model.threads);
    let ctx = Ctx { config, choices };
    if !matches!(cli.command, Command::Serve(_)) {
        crate::retain_freed_memory();
    }
    match cli.command {
        Command::Embed(a) => embed::run_embed(&ctx, a),
        Command::Info(a) => embed::run_info(&ctx, a),
        Command::Index(a) => index::run_index(&ctx, a),
        Command::Delete(a) => index::run_delete(&ctx, a),
        Command::Check(a) => index::run_check(&ctx, a),
        Command::Copy(a) => copy::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::Snapshot(a) => snapshot::run_snapshot(a),
        Command::Restore(a) => snapshot::run_restore(a),
        Command::Adapt(a) => adapt::run_adapt(&ctx, a),
        Command::Finetune(a) => adapt::run_finetune(&ctx, a),
        Command::ExportDelta(a) => adapt::run_export_delta(a),
        Command::Eval(a) => eval::run(&ctx, a),
        Command::Bench(a) => bench::run(&ctx, a),
    }
}

fn init_logging(verbose: u8, json: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { fmt.json().flatten_event(true).try_init() } else { fmt.try_init() };
}

/// candle's CPU matmuls and our own parallel loops both run on rayon's global pool.
fn init_threads(threads: usize) {
    let n = if threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        threads
    };
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// Every flag and argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "engine", &mut missing);
        assert!(missing.is_empty(), "flags without help text: {missing:?}");
    }

    /// Comma-separated list flags split their defaults as they split the values given.
    #[test]
    fn list_flags_split_their_defaults() {
        use super::bench::BenchWhat;
        use engine::config::{Dtype, Trainable};
        let parse = |args: &[&str]| match super::Cli::try_parse_from(args).unwrap().command {
            super::Command::Bench(b) => b.what,
            _ => unreachable!(),
        };
        let BenchWhat::Train(t) = parse(&["engine", "bench", "train"]) else { unreachable!() };
        assert_eq!(t.trainable, [Trainable::Last(4), Trainable::Lora, Trainable::All]);
        let BenchWhat::Encode(e) = parse(&["engine", "bench", "encode", "--dtypes", "bf16,f16"])
        else {
            unreachable!()
        };
        assert_eq!(e.dtypes, [Dtype::Bf16, Dtype::F16]);
    }
}
