//! `engine embed` and `engine info`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct EmbedArgs {
    /// GGUF file or Hugging Face model folder (default: model.path from the config).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// query (NEXT template) or passage (SELF template).
    #[arg(long, default_value = "passage")]
    pub kind: String,
    /// llama2vec | last | mean (default: encoder.pooling).
    #[arg(long)]
    pub pooling: Option<String>,
    /// llama2vec | none (default: encoder.template).
    #[arg(long)]
    pub template: Option<String>,
    /// cpu | cuda | auto (default: model.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Read texts from this file, one per line, in addition to TEXT arguments.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Texts to embed.
    pub texts: Vec<String>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// GGUF file or Hugging Face model folder (default: model.path from the config).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cpu | cuda | auto (default: model.device).
    #[arg(long)]
    pub device: Option<String>,
}

pub fn run_embed(_ctx: &Ctx, _args: EmbedArgs) -> Result<()> {
    anyhow::bail!("embed: not implemented yet")
}

pub fn run_info(_ctx: &Ctx, _args: InfoArgs) -> Result<()> {
    anyhow::bail!("info: not implemented yet")
}
