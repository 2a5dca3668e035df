//! Crash-safe persistence of ANN indexes.
//!
//! A backend may need several files (hnsw_rs writes a graph and a data file, FAISS a binary plus
//! our label map), and replacing several files cannot be atomic. So each save goes to a fresh
//! snapshot folder `snap-N`; every file in it is fsynced, then a one-line pointer file `CURRENT`
//! is replaced atomically (write temp, fsync, rename, fsync folder). A crash at any point leaves
//! `CURRENT` naming a complete older snapshot (or none); unreferenced folders are swept later.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";
const PREFIX: &str = "snap-";

/// Writes `bytes` to `path` atomically: temp file in the same folder, fsync, rename, fsync folder.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir =
        path.parent().ok_or_else(|| Error::Index(format!("{} has no parent", path.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsync a folder so a rename or a new entry in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // Opening a directory for reading and calling fsync is the POSIX way; on platforms where it
    // is unsupported the rename is still atomic, only its durability is weaker.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if cfg!(windows) => {
            tracing::debug!("directory fsync unsupported: {e}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// fsync every regular file in `dir` (backends write with their own writers).
pub fn sync_files_in(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// The snapshot folders of one index, under `root` (e.g. `DB/ann`).
pub struct Snapshots {
    root: PathBuf,
}

impl Snapshots {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Snapshots { root: root.into() }
    }

    /// The folder the last completed save wrote, if any.
    pub fn current(&self) -> Result<Option<PathBuf>> {
        let p = self.root.join(CURRENT);
        let name = match fs::read_to_string(&p) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !name.starts_with(PREFIX) || name.contains('/') || name.contains('\\') {
            return Err(Error::Index(format!(
                "{} names an invalid snapshot {name:?}",
                p.display()
            )));
        }
        let dir = self.root.join(&name);
        if !dir.is_dir() {
            return Err(Error::Index(format!("snapshot {} is missing", dir.display())));
        }
        Ok(Some(dir))
    }

    /// Saves through `write` (which fills a fresh empty folder) and makes the result current.
    /// Older snapshots are removed afterwards; failing to remove them is only logged.
    pub fn save(&self, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        fs::create_dir_all(&self.root)?;
        let next = self.next_number()?;
        let name = format!("{PREFIX}{next}");
        let dir = self.root.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        let result = write(&dir).and_then(|()| sync_files_in(&dir));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        sync_dir(&self.root)?;
        atomic_write(&self.root.join(CURRENT), format!("{name}\n").as_bytes())?;
        self.sweep(&name);
        Ok(dir)
    }

    /// Removes every snapshot (used when the index is rebuilt with another backend).
    pub fn clear(&self) -> Result<()> {
        match fs::remove_file(self.root.join(CURRENT)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.sweep("");
        Ok(())
    }

    fn next_number(&self) -> Result<u64> {
        let mut max = 0;
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if let Some(n) = e
                    .file_name()
                    .to_str()
                    .and_then(|s| s.strip_prefix(PREFIX))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    max = max.max(n);
                }
            }
        }
        Ok(max + 1)
    }

    /// Deletes snapshot folders and stale temp files other than `keep`.
    fn sweep(&self, keep: &str) {
        let Ok(rd) = fs::read_dir(&self.root) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with(PREFIX) && name != keep) || name.ends_with(".tmp");
            if stale {
                let p = e.path();
                let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                if let Err(err) = r {
                    tracing::warn!("could not remove old snapshot {}: {err}", p.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_save_keeps_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::new(dir.path().join("ann"));
        assert!(s.current().unwrap().is_none());
        s.save(|d| Ok(fs::write(d.join("a"), b"one")?)).unwrap();
        let cur = s.current().unwrap().unwrap();
        assert_eq!(fs::read(cur.join("a")).unwrap(), b"one");
        // A writer that fails half-way (after writing a partial file) must not change CURRENT.
        let err = s.save(|d| {
            fs::write(d.join("a"), b"half")?;
            Err(Error::Index("disk full".into()))
        });
        assert!(err.is_err());
        let cur2 = s.current().unwrap().unwrap();
        assert_eq!(cur, cur2);
        assert_eq!(fs::read(cur2.join("a")).unwrap(), b"one");
        // A later successful save replaces it and sweeps the old folder.
        s.save(|d| Ok(fs::write(d.join("a"), b"two")?)).unwrap();
        let cur3 = s.current().unwrap().unwrap();
        assert_ne!(cur3, cur);
        assert!(!cur.exists());
        assert_eq!(fs::read(cur3.join("a")).unwrap(), b"two");
    }

    #[test]
    fn crash_before_pointer_switch_is_invisible() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ann");
        let s = Snapshots::new(&root);
        s.save(|d| Ok(fs::write(d.join("a"), b"one")?)).unwrap();
        // Simulate a crash mid-save: a new snapshot folder and a temp pointer exist, CURRENT not
        // switched yet.
        fs::create_dir(root.join("snap-99")).unwrap();
        fs::write(root.join("snap-99/a"), b"partial").unwrap();
        fs::write(root.join(".CURRENT.1.tmp"), b"snap-99").unwrap();
        let cur = s.current().unwrap().unwrap();
        assert_eq!(fs::read(cur.join("a")).unwrap(), b"one");
        s.save(|d| Ok(fs::write(d.join("a"), b"two")?)).unwrap();
        assert!(!root.join("snap-99").exists());
        assert!(!root.join(".CURRENT.1.tmp").exists());
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"first").unwrap();
        atomic_write(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
