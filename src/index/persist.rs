//! Crash-safe persistence of ANN indexes.
//!
//! A backend may need several files (hnsw_rs writes a graph and a data file, FAISS a binary plus
//! our label map), and replacing several files cannot be atomic. So each save goes to a fresh
//! snapshot folder `snap-N`; every file in it is fsynced, then a one-line pointer file `CURRENT`
//! is replaced atomically (write temp, fsync, rename, fsync folder). A crash at any point leaves
//! `CURRENT` naming a complete older snapshot (or none); unreferenced folders are swept later.
//!
//! Every snapshot also records the length and sha256 of each of its files (`CHECKSUMS`), checked
//! before any file reaches a backend's loader: hnsw_rs exits the process on a truncated data
//! file and aborts on a corrupt graph, and the snapshot is derived data, so a damaged one must
//! be rebuilt from the stored vectors, never make the database unopenable.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";
const PREFIX: &str = "snap-";
/// Per-snapshot list of `sha256 length name` lines, one per file.
const CHECKSUMS: &str = "CHECKSUMS";

/// sha256 (hex) and length of a file, streamed.
fn file_digest(path: &Path) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("{:x}", hasher.finalize()), len))
}

/// Records every file of a freshly written snapshot folder in its `CHECKSUMS`.
fn write_checksums(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && name != CHECKSUMS {
            names.push(name);
        }
    }
    names.sort();
    let mut out = String::new();
    for name in names {
        let (sha, len) = file_digest(&dir.join(&name))?;
        out.push_str(&format!("{sha} {len} {name}\n"));
    }
    fs::write(dir.join(CHECKSUMS), out)?;
    Ok(())
}

/// Checks every file `CHECKSUMS` lists against its recorded length and sha256.
fn verify_checksums(dir: &Path) -> Result<()> {
    let bad = |why: String| Error::Index(format!("snapshot {} is damaged: {why}", dir.display()));
    let list = fs::read_to_string(dir.join(CHECKSUMS))
        .map_err(|e| bad(format!("no readable {CHECKSUMS} ({e})")))?;
    for line in list.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(sha), Some(len), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("malformed {CHECKSUMS} line {line:?}")));
        };
        let len: u64 = len.parse().map_err(|_| bad(format!("malformed length in {line:?}")))?;
        if name.contains('/') || name.contains('\\') {
            return Err(bad(format!("{CHECKSUMS} names {name:?}")));
        }
        let path = dir.join(name);
        let actual_len = fs::metadata(&path).map_err(|e| bad(format!("{name}: {e}")))?.len();
        if actual_len != len {
            return Err(bad(format!("{name} has {actual_len} bytes, {len} were written")));
        }
        if file_digest(&path)?.0 != sha {
            return Err(bad(format!("{name} does not match its checksum")));
        }
    }
    Ok(())
}

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

    /// The folder the last completed save wrote, if any, once its files match their
    /// checksums (an error otherwise: callers rebuild the index).
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
        verify_checksums(&dir)?;
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
        let result =
            write(&dir).and_then(|()| write_checksums(&dir)).and_then(|()| sync_files_in(&dir));
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
    fn damaged_snapshot_files_are_caught_before_any_loader_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::new(dir.path().join("ann"));
        s.save(|d| {
            fs::write(d.join("graph"), vec![7u8; 1000])?;
            Ok(fs::write(d.join("data"), vec![9u8; 4000])?)
        })
        .unwrap();
        let cur = s.current().unwrap().unwrap();
        // Truncated.
        let data = fs::read(cur.join("data")).unwrap();
        fs::write(cur.join("data"), &data[..2000]).unwrap();
        let err = s.current().unwrap_err().to_string();
        assert!(err.contains("data has 2000 bytes"), "{err}");
        fs::write(cur.join("data"), &data).unwrap();
        assert!(s.current().unwrap().is_some());
        // One flipped byte, same length.
        let mut graph = fs::read(cur.join("graph")).unwrap();
        graph[500] ^= 0xff;
        fs::write(cur.join("graph"), &graph).unwrap();
        let err = s.current().unwrap_err().to_string();
        assert!(err.contains("graph does not match"), "{err}");
        // A snapshot without checksums (or with them removed) is not trusted either.
        fs::remove_file(cur.join(CHECKSUMS)).unwrap();
        assert!(s.current().is_err());
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
