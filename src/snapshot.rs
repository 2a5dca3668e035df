//! Snapshots: a whole database as one tar archive (`engine snapshot`, `POST /snapshots`), taken
//! while it keeps serving, and restored into a new folder (`engine restore`).
//!
//! Archive layout (everything under `snapshot/`):
//! ```text
//! snapshot/snapshot.json   what it holds (SnapshotInfo: format, kind, counts, manifest)
//! snapshot/store.bin       every stored record: documents, passages, vectors, manifest
//! snapshot/ann/            the ANN index's files
//! snapshot/lexical/        the BM25 index's files (the whole database of a lexical-only one)
//! ```
//! Consistency: a dense database is copied between writes ([`SearchIndex::snapshot_into`]:
//! writes wait while the store, ANN and BM25 files are copied to a staging folder, then resume
//! while the archive is written), so a snapshot holds every write acknowledged before it began
//! and none half done. The archive is written to a temporary name and renamed when complete.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::persist::sync_dir;
use crate::lexical::LexicalIndex;
use crate::search::SearchIndex;
use crate::store::{lexical_dir, Database, Manifest};

/// Version of the archive layout.
pub const FORMAT: u32 = 1;
/// The folder everything in an archive lies under.
const ROOT: &str = "snapshot";
/// The description of an archive's contents.
const INFO: &str = "snapshot.json";

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub format: u32,
    /// `dense` (store, vectors, ANN and BM25 indexes) or `lexical_only` (a BM25 index).
    pub kind: String,
    pub documents: u64,
    pub passages: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// The engine version that wrote it.
    pub engine_version: String,
    /// The database's manifest (dense databases).
    pub manifest: Option<Manifest>,
}

/// What a snapshot is taken of.
pub enum Source<'a> {
    Dense(&'a SearchIndex),
    /// A `--lexical-only` database's BM25 index.
    LexicalOnly(&'a LexicalIndex),
}

/// A staging folder beside `target`, removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn beside(target: &Path, what: &str) -> Result<Self> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = parent.join(format!(".{name}.{what}.{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes a snapshot of `source` to the archive `out` (replaced if it exists, only once the new
/// one is complete).
pub fn write(source: Source<'_>, out: &Path) -> Result<SnapshotInfo> {
    if out.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is a folder; name the archive file to write",
            out.display()
        )));
    }
    let stage = Staging::beside(out, "snapshot")?;
    let root = stage.0.join(ROOT);
    fs::create_dir(&root)?;
    let info = match source {
        Source::Dense(index) => {
            let m = index.snapshot_into(&root)?;
            SnapshotInfo {
                format: FORMAT,
                kind: "dense".into(),
                documents: m.documents,
                passages: m.passages,
                created_at: now_secs(),
                engine_version: env!("CARGO_PKG_VERSION").into(),
                manifest: Some(m),
            }
        }
        Source::LexicalOnly(lex) => {
            lex.copy_files_to(&lexical_dir(&root))?;
            SnapshotInfo {
                format: FORMAT,
                kind: "lexical_only".into(),
                documents: lex.count(),
                passages: 0,
                created_at: now_secs(),
                engine_version: env!("CARGO_PKG_VERSION").into(),
                manifest: None,
            }
        }
    };
    fs::write(root.join(INFO), serde_json::to_vec_pretty(&info)?)?;
    let tmp = stage.0.with_extension("tar");
    {
        let mut tar = tar::Builder::new(File::create(&tmp)?);
        tar.follow_symlinks(false);
        tar.append_dir_all(ROOT, &root)?;
        tar.into_inner()?.sync_all()?;
    }
    let renamed = fs::rename(&tmp, out);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(info)
}

/// Restores the archive `archive` into `db`, a folder that must not exist or be empty, and
/// checks that the result opens (store, ANN and BM25 in step). A failed restore removes what
/// it wrote.
pub fn restore(archive: &Path, db: &Path) -> Result<SnapshotInfo> {
    let occupied = match fs::read_dir(db) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::InvalidInput(format!("{}: {e}", db.display()))),
    };
    if occupied {
        return Err(Error::InvalidInput(format!(
            "{} is not empty: restore into a new folder (nothing there was changed)",
            db.display()
        )));
    }
    let file = File::open(archive).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("snapshot {} does not exist", archive.display()))
        }
        _ => Error::Io(e),
    })?;
    let stage = Staging::beside(db, "restore")?;
    let bad = |why: String| {
        Error::InvalidInput(format!("{} is not an engine snapshot: {why}", archive.display()))
    };
    // `unpack` refuses entries that would land outside the staging folder.
    tar::Archive::new(file).unpack(&stage.0).map_err(|e| bad(e.to_string()))?;
    let root = stage.0.join(ROOT);
    let info: SnapshotInfo = serde_json::from_slice(
        &fs::read(root.join(INFO)).map_err(|e| bad(format!("no {ROOT}/{INFO} ({e})")))?,
    )
    .map_err(|e| bad(format!("{ROOT}/{INFO}: {e}")))?;
    if info.format != FORMAT {
        return Err(bad(format!("archive format {} (this engine reads {FORMAT})", info.format)));
    }
    let result = place(&root, db, &info);
    if result.is_err() {
        let _ = fs::remove_dir_all(db);
    }
    result.map(|()| info)
}

/// Moves a staged snapshot into `db` and checks that it opens.
fn place(root: &Path, db: &Path, info: &SnapshotInfo) -> Result<()> {
    let lexical = lexical_dir(root);
    match info.kind.as_str() {
        "dense" => {
            let database = Database::import_from(root, db)?;
            let documents = database.manifest().documents;
            if documents != info.documents {
                return Err(Error::Store(format!(
                    "restored {documents} documents, the snapshot says {}",
                    info.documents
                )));
            }
            if lexical.is_dir() {
                // Copied with the store between two writes: it must agree, as is.
                fs::rename(&lexical, lexical_dir(db))?;
                let count = LexicalIndex::open(&lexical_dir(db))?.count();
                if count != documents {
                    return Err(Error::Lexical(format!(
                        "the snapshot's BM25 index has {count} documents, its store {documents}"
                    )));
                }
            }
            // A database without BM25 gets it built, as `engine serve` would.
            let index = SearchIndex::open(database, true)?;
            index.db().save_index()
        }
        "lexical_only" => {
            fs::create_dir_all(db)?;
            fs::rename(&lexical, lexical_dir(db))?;
            let count = LexicalIndex::open(&lexical_dir(db))?.count();
            if count != info.documents {
                return Err(Error::Lexical(format!(
                    "restored {count} documents, the snapshot says {}",
                    info.documents
                )));
            }
            Ok(())
        }
        other => Err(Error::InvalidInput(format!("unknown snapshot kind {other:?}"))),
    }
}
