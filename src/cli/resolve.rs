//! Which encoder a command over an existing database uses. A database records the encoder it
//! was built with (model path, pooling, template: its manifest), so `search`, `eval` and
//! `serve` load that one unless the user names another; a flag or `--config` value that
//! contradicts the database is an error naming both values rather than a silent mismatch.

use std::path::{Path, PathBuf};

use std::fmt::Display;
use std::str::FromStr;

use anyhow::{bail, Result};
use clap::Args;
use engine::config::{Config, Device, Pooling, Template};
use engine::encoder::EncoderFingerprint;
use engine::store::Manifest;

use super::Ctx;

/// The flags that name an encoder and where it runs, shared by every command that loads one.
/// On a command that reads a database, the model, pooling and template default to the
/// database's, and a flag that contradicts it is an error ([`config_for_db`]).
#[derive(Args, Clone, Debug, Default)]
pub struct EncoderFlags {
    /// GGUF file or model folder [default: model.path; search, eval, serve: the encoder the
    /// database was built with]. A database refuses any other encoder.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// How token states become one vector [default: encoder.pooling; search, eval, serve: the
    /// database's]. A database refuses any other.
    #[arg(long)]
    pub pooling: Option<Pooling>,
    /// Whether texts get the SELF/NEXT prompts [default: encoder.template; search, eval,
    /// serve: the database's]. A database refuses any other.
    #[arg(long)]
    pub template: Option<Template>,
    /// Where the encoder runs [default: model.device].
    #[arg(long)]
    pub device: Option<Device>,
}

impl EncoderFlags {
    /// A copy of `config` with the flags given set (commands that make or read no database).
    pub fn apply(&self, config: &Config) -> Config {
        let mut c = config.clone();
        if let Some(m) = &self.model {
            c.model.path = m.clone();
        }
        c.encoder.pooling = self.pooling.unwrap_or(c.encoder.pooling);
        c.encoder.template = self.template.unwrap_or(c.encoder.template);
        c.model.device = self.device.unwrap_or(c.model.device);
        c
    }
}

/// Encoder settings the `--config` file sets explicitly (the rest are defaults, which a
/// database's manifest overrides).
#[derive(Clone, Debug, Default)]
pub struct ConfigChoices {
    /// The `--config` file, for messages.
    pub file: Option<PathBuf>,
    pub model_path: bool,
    pub pooling: bool,
    pub template: bool,
}

impl ConfigChoices {
    /// Reads which keys `file` sets. A relative `model.path` in it is made relative to the
    /// file's folder (so a config works from any working directory; the working directory's
    /// when only it holds the path) and written back into `config`.
    pub fn from_file(file: Option<&Path>, config: &mut Config) -> Result<Self> {
        let Some(file) = file else { return Ok(Self::default()) };
        // Config::load already read and validated the file; read the raw table again to see
        // which keys it names.
        let text = std::fs::read_to_string(file)?;
        let table: toml::Table = toml::from_str(&text)?;
        let has = |section: &str, key: &str| {
            table.get(section).and_then(|s| s.as_table()).is_some_and(|s| s.contains_key(key))
        };
        let choices = Self {
            file: Some(file.to_path_buf()),
            model_path: has("model", "path"),
            pooling: has("encoder", "pooling"),
            template: has("encoder", "template"),
        };
        if choices.model_path && config.model.path.is_relative() {
            let base = file.parent().unwrap_or(Path::new(""));
            let beside_file = base.join(&config.model.path);
            // configs/default.toml itself names the model from the repository root: where only
            // the working directory holds the path, that is the one meant.
            if beside_file.exists() || !config.model.path.exists() {
                config.model.path = beside_file;
            }
        }
        Ok(choices)
    }

    fn origin(&self, key: &str) -> String {
        match &self.file {
            Some(f) => format!("{key} in {}", f.display()),
            None => key.to_string(),
        }
    }
}

/// One encoder setting the user chose, and where.
struct Choice {
    origin: String,
    value: String,
}

/// Settles one encoder setting (`name`: pooling or template) against the value `db` records:
/// the user's choice (`flag`, else the `--config` file's `current`) must equal it, and without
/// a choice `current` becomes it. A recorded value this engine does not know (a test
/// embedder's) leaves `current`: the fingerprint check refuses a different encoder.
fn settle<T: Copy + Display + FromStr>(
    ctx: &Ctx,
    db: &Path,
    name: &str,
    flag: Option<T>,
    in_config: bool,
    current: &mut T,
    db_value: &str,
) -> Result<()> {
    let chosen = match flag {
        Some(v) => Some(Choice { origin: format!("--{name}"), value: v.to_string() }),
        None if in_config => Some(Choice {
            origin: ctx.choices.origin(&format!("encoder.{name}")),
            value: current.to_string(),
        }),
        None => None,
    };
    match chosen {
        Some(c) if c.value != db_value => bail!(
            "encoder mismatch: {} is {:?} but the database {} was built with {name} {:?}; \
             leave {name} unset \
             (the database's is used) or index into a new database",
            c.origin,
            c.value,
            db.display(),
            db_value
        ),
        _ => {
            if let Ok(v) = db_value.parse() {
                *current = v;
            }
        }
    }
    Ok(())
}

/// The configuration to load `db`'s encoder with: the flags and config, with the model path,
/// pooling and template the user did not choose taken from the database's manifest. A chosen
/// pooling or template that differs from the database's is an error naming both.
pub fn config_for_db(ctx: &Ctx, db: &Path, m: &Manifest, flags: &EncoderFlags) -> Result<Config> {
    let mut config = ctx.config.clone();
    let (e, choices) = (&m.encoder, &ctx.choices);
    let pooling = &mut config.encoder.pooling;
    settle(ctx, db, "pooling", flags.pooling, choices.pooling, pooling, &e.pooling)?;
    let template = &mut config.encoder.template;
    settle(ctx, db, "template", flags.template, choices.template, template, &e.template)?;
    config.model.device = flags.device.unwrap_or(config.model.device);
    let chosen_model = flags.model.is_some() || ctx.choices.model_path;
    if let Some(m) = &flags.model {
        config.model.path = m.clone();
    }
    if !chosen_model {
        if let Some(path) = &m.encoder.model_path {
            if !path.exists() {
                bail!(
                    "the database {} was built with the encoder at {}, which no longer exists; \
                     pass --model with that encoder's new location",
                    db.display(),
                    path.display()
                );
            }
            config.model.path = path.clone();
        }
    }
    Ok(config)
}

/// Refuses an encoder whose fingerprint differs from the database's, naming both.
pub fn ensure_same_encoder(
    ctx: &Ctx,
    db: &Path,
    m: &Manifest,
    flags: &EncoderFlags,
    loaded: &EncoderFingerprint,
    config: &Config,
) -> Result<()> {
    if &m.encoder == loaded {
        return Ok(());
    }
    let origin = if flags.model.is_some() {
        "--model".to_string()
    } else if ctx.choices.model_path {
        ctx.choices.origin("model.path")
    } else {
        "model.path".to_string()
    };
    let describe = |fp: &EncoderFingerprint| {
        format!(
            "{} (hash {}, pooling {}, template {}, dim {}{})",
            fp.model_path.as_deref().map(|p| p.display().to_string()).unwrap_or("?".into()),
            fp.model_hash.get(..12).unwrap_or(&fp.model_hash),
            fp.pooling,
            fp.template,
            fp.dim,
            if fp.trained { ", trained" } else { "" }
        )
    };
    bail!(
        "encoder mismatch: the database {} was built with {}, but {origin} ({}) is {}; \
         leave the model unset (the database's is used) or index into a new database",
        db.display(),
        describe(&m.encoder),
        config.model.path.display(),
        describe(loaded)
    )
}
