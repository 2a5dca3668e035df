//! `engine snapshot` and `engine restore`: a database as one archive file and back
//! (`engine::snapshot`). A running server snapshots its database with `POST /snapshots`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::lexical::LexicalIndex;
use engine::search::SearchIndex;
use engine::snapshot::{self, Source};
use engine::store::{lexical_dir, Database};

#[derive(Args)]
pub struct SnapshotArgs {
    /// Database folder (made by `engine index`, with or without --lexical-only); while
    /// `engine serve` has it open, ask the server instead: POST /snapshots.
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
    /// Archive file to write (a tar file; replaced only once the new one is complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Archive written by `engine snapshot` or POST /snapshots.
    pub archive: PathBuf,
    /// New database folder to restore into (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
}

pub fn run_snapshot(args: SnapshotArgs) -> Result<()> {
    let info = if !Database::exists(&args.db) && LexicalIndex::exists(&lexical_dir(&args.db)) {
        let lex = LexicalIndex::open(&lexical_dir(&args.db))?;
        snapshot::write(Source::LexicalOnly(&lex), &args.out)
    } else {
        let db = Database::open(&args.db, None).map_err(|e| match e {
            engine::Error::DatabaseInUse { .. } => {
                anyhow::anyhow!("{e}; a running server writes a snapshot on POST /snapshots")
            }
            e => anyhow::Error::new(e).context(format!("opening database {}", args.db.display())),
        })?;
        let index = SearchIndex::open(db, false)?;
        snapshot::write(Source::Dense(&index), &args.out)
    }
    .with_context(|| format!("writing {}", args.out.display()))?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    let out = serde_json::json!({ "path": args.out, "bytes": bytes, "snapshot": info });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn run_restore(args: RestoreArgs) -> Result<()> {
    let info = snapshot::restore(&args.archive, &args.db).with_context(|| {
        format!("restoring {} into {}", args.archive.display(), args.db.display())
    })?;
    let out = serde_json::json!({ "db": args.db, "snapshot": info });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
