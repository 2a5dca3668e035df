//! Corpus readers: a BEIR folder (`corpus.jsonl`), any JSONL file (configurable field names),
//! or a folder of `.txt` / `.md` files. Ids are always strings: a JSON id is a string or an
//! integer that fits in 64 bits (written out digit for digit); any other number is refused,
//! since a float cannot be turned back into the text the file had (`1.50` would become `1.5`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::IndexConfig;
use crate::error::{Error, Result};

/// One document as read from a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Unique id (see [`check_id`]).
    pub id: String,
    /// Title, empty when the record has none.
    pub title: String,
    /// Body text.
    pub text: String,
    /// Remaining fields of the record (`Null` when there are none).
    pub metadata: Value,
}

/// The layout a corpus was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusFormat {
    /// A BEIR folder: `corpus.jsonl` inside it.
    Beir,
    /// A JSONL file.
    Jsonl,
    /// A folder of `.txt` / `.md` files.
    Files,
}

/// How to read a corpus.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// JSON field holding the document id.
    pub id_field: String,
    /// JSON field holding the title (optional in records).
    pub title_field: String,
    /// JSON field holding the text (required in records).
    pub text_field: String,
    /// Skip malformed records (they are returned in [`Corpus::skipped`]) instead of failing.
    pub skip_bad: bool,
    /// Keep several JSONL records with one id and different content (the indexer keeps the
    /// last, as `engine index --update` asks). Otherwise such a repeat is an error naming its
    /// line (skipped under `skip_bad`).
    pub update: bool,
}

impl CorpusOptions {
    /// The field names of `[index]` in the configuration; `update` starts off.
    pub fn from_config(c: &IndexConfig, skip_bad: bool) -> Self {
        CorpusOptions {
            id_field: c.id_field.clone(),
            title_field: c.title_field.clone(),
            text_field: c.text_field.clone(),
            skip_bad,
            update: false,
        }
    }
}

/// Checks that `id` can name a document: not empty and not whitespace only (such an id cannot
/// be told apart from a missing one in a URL or a shell). Shared by the corpus readers and the
/// server so both accept the same ids. The error says what is wrong, for the caller to prefix.
pub fn check_id(id: &str) -> std::result::Result<(), &'static str> {
    if id.is_empty() {
        Err("is empty")
    } else if id.trim().is_empty() {
        Err("is blank (whitespace only)")
    } else {
        Ok(())
    }
}

/// The id written as the JSON value `v`: a string as is, or an integer that fits in 64 bits
/// in its decimal digits. Other numbers are refused: serde reads them as floats, which would
/// rewrite `1.50` as `1.5` and `123456789012345678901234567890` as `1.2345678901234568e+29`,
/// so distinct ids could collide. The id must also pass [`check_id`].
pub fn json_id(v: &Value) -> std::result::Result<String, String> {
    let id = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::Number(n) => {
            return Err(format!(
                "id {n} is a number that cannot be kept exactly (only integers within 64 bits \
                 can); write the id as a JSON string, in quotes, as it should read"
            ))
        }
        other => return Err(format!("id must be a string, got {other}")),
    };
    check_id(&id).map_err(|why| format!("id {id:?} {why}"))?;
    Ok(id)
}

/// What a reader produced.
#[derive(Debug)]
pub struct Corpus {
    /// The layout that was detected.
    pub format: CorpusFormat,
    /// Documents in corpus order.
    pub docs: Vec<Document>,
    /// Records skipped under `skip_bad`, each an [`Error::Corpus`] naming file and line.
    pub skipped: Vec<Error>,
}

/// Reads the corpus at `path`, detecting its format: a folder holding `corpus.jsonl` is BEIR,
/// any other folder is read for `.txt` / `.md` files, a regular file is JSONL.
pub fn read_corpus(path: &Path, opts: &CorpusOptions) -> Result<Corpus> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::NotFound(format!("corpus {} does not exist", path.display())),
        _ => Error::corpus(path, 0, e.to_string()),
    })?;
    if meta.is_file() {
        let (docs, skipped) = read_jsonl(path, opts)?;
        return Ok(Corpus { format: CorpusFormat::Jsonl, docs, skipped });
    }
    if !meta.is_dir() {
        return Err(Error::InvalidInput(format!(
            "corpus {} is a {}, not a JSONL file or a folder",
            path.display(),
            file_kind(&meta.file_type())
        )));
    }
    let beir = path.join("corpus.jsonl");
    // Any entry named corpus.jsonl makes this a BEIR folder: reading it as a folder of text
    // files instead would index something else than the user pointed at.
    match std::fs::symlink_metadata(&beir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let (docs, skipped) = read_files(path, opts)?;
            Ok(Corpus { format: CorpusFormat::Files, docs, skipped })
        }
        Err(e) => Err(Error::corpus(&beir, 0, e.to_string())),
        Ok(_) => {
            let target = std::fs::metadata(&beir)
                .map_err(|e| Error::corpus(&beir, 0, format!("cannot follow the link: {e}")))?;
            if !target.is_file() {
                return Err(Error::InvalidInput(format!(
                    "{} is a {}, not a regular file: a BEIR folder's corpus must be a JSONL file \
                     (move it away to index the folder's .txt/.md files instead)",
                    beir.display(),
                    file_kind(&target.file_type())
                )));
            }
            let (docs, skipped) = read_jsonl(&beir, opts)?;
            Ok(Corpus { format: CorpusFormat::Beir, docs, skipped })
        }
    }
}

/// What a non-regular file is, for error messages.
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "device";
        }
    }
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_file() {
        "file"
    } else {
        "special file"
    }
}

/// Reads JSONL line by line as bytes, so a non-UTF-8 line is reported with its number rather
/// than aborting the whole read. A repeated id with different content is an error at the
/// repeat's line unless `opts.update` (see [`CorpusOptions::update`]).
pub fn read_jsonl(path: &Path, opts: &CorpusOptions) -> Result<(Vec<Document>, Vec<Error>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::corpus(path, 0, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    // id -> (position in `docs`, line) of its first record.
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::corpus(path, line_no + 1, e.to_string()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let parsed = parse_line(&buf, opts)
            .and_then(|doc| match doc {
                Some(doc) => check_repeat(&seen, &docs, &doc, opts).map(|()| Some(doc)),
                None => Ok(None),
            })
            .map_err(|m| Error::corpus(path, line_no, m));
        match parsed {
            Ok(Some(doc)) => {
                seen.entry(doc.id.clone()).or_insert((docs.len(), line_no));
                docs.push(doc);
            }
            Ok(None) => {}
            Err(e) if opts.skip_bad => {
                tracing::warn!("skipping {e}");
                skipped.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((docs, skipped))
}

/// A repeated id is fine when its content is the same (the indexer counts it as a duplicate)
/// or when `update` keeps the last; a conflicting repeat is refused here, where its line is
/// still known.
fn check_repeat(
    seen: &HashMap<String, (usize, usize)>,
    docs: &[Document],
    doc: &Document,
    opts: &CorpusOptions,
) -> std::result::Result<(), String> {
    let Some(&(i, line)) = seen.get(&doc.id) else { return Ok(()) };
    let Some(first) = docs.get(i) else { return Ok(()) };
    let same = first.title == doc.title && first.text == doc.text && first.metadata == doc.metadata;
    if opts.update || same {
        return Ok(());
    }
    Err(format!(
        "document id {:?} already appeared at line {line} with different content (use --update \
         to keep the last one, or --skip-bad to skip this one)",
        doc.id
    ))
}

/// One JSONL line → a document (`None` for a blank line); errors are plain messages that the
/// caller wraps with file and line.
fn parse_line(raw: &[u8], opts: &CorpusOptions) -> std::result::Result<Option<Document>, String> {
    let line = std::str::from_utf8(raw)
        .map_err(|e| format!("not valid UTF-8 (byte {})", e.valid_up_to()))?;
    let line = line.trim_end_matches(['\n', '\r']).trim_start_matches('\u{feff}');
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    // Pyserini's JSONL layout (`id`, `contents`) is read as is when the configured (BEIR
    // default) fields are absent.
    let id_field = field_or_pyserini(&obj, &opts.id_field, DEFAULT_ID_FIELD, PYSERINI_ID_FIELD);
    let text_field =
        field_or_pyserini(&obj, &opts.text_field, DEFAULT_TEXT_FIELD, PYSERINI_TEXT_FIELD);
    let id = match obj.remove(id_field) {
        Some(v) => json_id(&v).map_err(|m| format!("field {id_field:?}: {m}"))?,
        None => {
            return Err(format!(
                "missing id field {:?} (name the record's id field with --id-field or \
                 index.id_field)",
                opts.id_field
            ))
        }
    };
    let title = take_text(&mut obj, &opts.title_field, false)?;
    let text = take_text(&mut obj, text_field, true)?;
    let metadata = match obj.len() {
        0 => Value::Null,
        1 if obj.contains_key("metadata") => obj.remove("metadata").unwrap_or(Value::Null),
        _ => Value::Object(obj),
    };
    Ok(Some(Document { id, title, text, metadata }))
}

const DEFAULT_ID_FIELD: &str = "_id";
const DEFAULT_TEXT_FIELD: &str = "text";
const PYSERINI_ID_FIELD: &str = "id";
const PYSERINI_TEXT_FIELD: &str = "contents";

/// `configured`, or Pyserini's name for the field when `configured` is the BEIR default and
/// the record has only Pyserini's.
fn field_or_pyserini<'a>(
    obj: &Map<String, Value>,
    configured: &'a str,
    default: &str,
    pyserini: &'a str,
) -> &'a str {
    if configured == default && !obj.contains_key(configured) && obj.contains_key(pyserini) {
        pyserini
    } else {
        configured
    }
}

fn take_text(
    obj: &mut Map<String, Value>,
    field: &str,
    required: bool,
) -> std::result::Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Null) => Ok(String::new()),
        Some(other) => Err(format!("field {field:?} must be a string, got {other}")),
        None if required => Err(format!(
            "missing text field {field:?} (name the record's text field with --text-field or \
             index.text_field)"
        )),
        None => Ok(String::new()),
    }
}

/// A folder of `.txt` / `.md` files (recursively, hidden entries skipped, sorted by path,
/// symbolic links followed). Id = path relative to the folder with `/` separators; title =
/// first markdown heading, else the file stem. An unreadable entry (folder, file, link loop,
/// broken link to a `.txt`/`.md`) is an error, or skipped under `skip_bad`.
pub fn read_files(root: &Path, opts: &CorpusOptions) -> Result<(Vec<Document>, Vec<Error>)> {
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    // Following links reads symlinked files and folders; walkdir reports link loops as errors.
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let item = match entry {
            Ok(entry) => {
                if !entry.file_type().is_file() {
                    continue;
                }
                let Some(is_md) = corpus_extension(entry.path()) else { continue };
                read_text_file(root, entry.path(), is_md)
            }
            // The folder itself unreadable: nothing to skip to.
            Err(e) if e.depth() == 0 => return Err(Error::corpus(root, 0, e.to_string())),
            Err(e) => match walk_error(root, e) {
                Some(err) => Err(err),
                None => continue,
            },
        };
        match item {
            Ok(doc) => docs.push(doc),
            Err(e) if opts.skip_bad => {
                tracing::warn!("skipping {e}");
                skipped.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((docs, skipped))
}

/// `Some(is_markdown)` for the extensions a folder corpus reads, `None` for others.
fn corpus_extension(path: &Path) -> Option<bool> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("md" | "markdown") => Some(true),
        Some("txt") => Some(false),
        _ => None,
    }
}

/// A walk error as a corpus error, or `None` for a broken link that would not have been read
/// anyway (not a `.txt`/`.md` name).
fn walk_error(root: &Path, e: walkdir::Error) -> Option<Error> {
    let path = e.path().unwrap_or(root).to_path_buf();
    let dangling = e.io_error().is_some_and(|io| io.kind() == ErrorKind::NotFound)
        && path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
    if dangling {
        return corpus_extension(&path).map(|_| Error::corpus(&path, 0, "broken symbolic link"));
    }
    Some(Error::corpus(&path, 0, e.to_string()))
}

fn read_text_file(root: &Path, path: &Path, is_md: bool) -> Result<Document> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    // A lossy conversion would give distinct non-UTF-8 names one id; refuse them instead.
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let Some(parts) = parts else {
        return Err(Error::corpus(
            path,
            0,
            "file name is not valid UTF-8, so it cannot be a document id (rename the file)",
        ));
    };
    let id = parts.join("/");
    let bytes = std::fs::read(path).map_err(|e| Error::corpus(path, 0, e.to_string()))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(Error::corpus(path, line, format!("file is not valid UTF-8 (byte {at})")));
        }
    };
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let title = if is_md { markdown_title(&text) } else { None }.unwrap_or(stem);
    Ok(Document { id, title, text, metadata: Value::Null })
}

/// First ATX heading (`# Title`, any level) outside code fences.
fn markdown_title(text: &str) -> Option<String> {
    let mut in_fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) {
            let rest = &t[hashes..];
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                let title = rest.trim().trim_end_matches('#').trim();
                if !title.is_empty() {
                    return Some(title.to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(skip_bad: bool) -> CorpusOptions {
        CorpusOptions {
            id_field: "_id".into(),
            title_field: "title".into(),
            text_field: "text".into(),
            skip_bad,
            update: false,
        }
    }

    #[test]
    fn pyserini_id_contents_records_read_as_is_and_missing_fields_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(&p, "{\"id\":\"d1\",\"contents\":\"tides and the moon\"}\n").unwrap();
        let c = read_corpus(&p, &opts(false)).unwrap();
        assert_eq!(c.docs.len(), 1);
        assert_eq!((c.docs[0].id.as_str(), c.docs[0].text.as_str()), ("d1", "tides and the moon"));
        assert_eq!(c.docs[0].metadata, Value::Null);
        // Named fields win; a record without them names the flag to set.
        std::fs::write(&p, "{\"docid\":\"d1\",\"body\":\"x\"}\n").unwrap();
        let err = read_corpus(&p, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("--id-field"), "{err}");
        let named =
            CorpusOptions { id_field: "docid".into(), text_field: "body".into(), ..opts(false) };
        assert_eq!(read_corpus(&p, &named).unwrap().docs[0].text, "x");
        std::fs::write(&p, "{\"_id\":\"d1\",\"body\":\"x\"}\n").unwrap();
        let err = read_corpus(&p, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("--text-field"), "{err}");
    }

    #[test]
    fn malformed_line_reports_file_and_line_and_skip_bad_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(&p, "{\"_id\":\"a\",\"text\":\"x\"}\n\n{\"_id\":\"b\",\"text\": oops}\n{\"_id\":\"c\",\"text\":\"y\"}\n").unwrap();
        let err = read_corpus(&p, &opts(false)).unwrap_err();
        match &err {
            Error::Corpus { path, line, .. } => {
                assert_eq!(path, &p);
                assert_eq!(*line, 3);
            }
            other => panic!("wrong error {other}"),
        }
        assert!(err.to_string().contains("c.jsonl:3"), "{err}");
        let c = read_corpus(&p, &opts(true)).unwrap();
        assert_eq!(c.docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(c.skipped.len(), 1);
    }

    #[test]
    fn ids_stay_strings_and_fields_are_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(&p, "{\"docid\":\"007\",\"body\":\"hello\",\"headline\":\"H\",\"lang\":\"en\"}\r\n{\"docid\":12,\"body\":\"x\"}\n").unwrap();
        let o = CorpusOptions {
            id_field: "docid".into(),
            title_field: "headline".into(),
            text_field: "body".into(),
            skip_bad: false,
            update: false,
        };
        let c = read_corpus(&p, &o).unwrap();
        assert_eq!(c.format, CorpusFormat::Jsonl);
        assert_eq!(c.docs[0].id, "007");
        assert_eq!(c.docs[0].title, "H");
        assert_eq!(c.docs[0].metadata["lang"], "en");
        assert_eq!(c.docs[1].id, "12");
        assert_eq!(c.docs[1].title, "");
    }

    #[test]
    fn non_utf8_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        let mut bytes = b"{\"_id\":\"a\",\"text\":\"x\"}\n{\"_id\":\"b\",\"text\":\"".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\"}\n");
        std::fs::write(&p, bytes).unwrap();
        let err = read_corpus(&p, &opts(false)).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn beir_folder_and_text_folder() {
        let dir = tempfile::tempdir().unwrap();
        let beir = dir.path().join("beir");
        std::fs::create_dir(&beir).unwrap();
        std::fs::write(
            beir.join("corpus.jsonl"),
            "{\"_id\":\"d1\",\"title\":\"T\",\"text\":\"body\",\"metadata\":{\"y\":1}}\n",
        )
        .unwrap();
        let c = read_corpus(&beir, &opts(false)).unwrap();
        assert_eq!(c.format, CorpusFormat::Beir);
        assert_eq!(c.docs[0].metadata["y"], 1);

        let files = dir.path().join("files");
        std::fs::create_dir_all(files.join("sub")).unwrap();
        std::fs::create_dir_all(files.join(".git")).unwrap();
        std::fs::write(files.join("a.txt"), "plain text").unwrap();
        std::fs::write(
            files.join("sub/b.md"),
            "intro\n```\n# not a title\n```\n## Real Title ##\nbody",
        )
        .unwrap();
        std::fs::write(files.join("sub/c.md"), "no heading").unwrap();
        std::fs::write(files.join("skip.pdf"), "x").unwrap();
        std::fs::write(files.join(".git/d.txt"), "hidden").unwrap();
        std::fs::write(files.join("bad.txt"), [b'o', b'k', b'\n', 0xff]).unwrap();
        let err = read_corpus(&files, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("bad.txt:2") && err.contains("UTF-8"), "{err}");
        let c = read_corpus(&files, &opts(true)).unwrap();
        assert_eq!(c.format, CorpusFormat::Files);
        let got: Vec<(&str, &str)> =
            c.docs.iter().map(|d| (d.id.as_str(), d.title.as_str())).collect();
        assert_eq!(got, [("a.txt", "a"), ("sub/b.md", "Real Title"), ("sub/c.md", "c")]);
        assert_eq!(c.skipped.len(), 1);
    }

    fn write(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap();
    }

    fn ids(c: &Corpus) -> Vec<&str> {
        c.docs.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn numeric_ids_are_kept_exactly_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        write(
            &p,
            "{\"_id\":18446744073709551615,\"text\":\"u64 max\"}\n\
             {\"_id\":-9223372036854775808,\"text\":\"i64 min\"}\n\
             {\"_id\":\"1.50\",\"text\":\"quoted\"}\n",
        );
        let c = read_corpus(&p, &opts(false)).unwrap();
        assert_eq!(ids(&c), ["18446744073709551615", "-9223372036854775808", "1.50"]);
        for (bad, line) in [
            ("123456789012345678901234567890", 2),
            ("1.50", 2),
            ("1e3", 2),
            ("18446744073709551616", 2),
        ] {
            write(
                &p,
                &format!("{{\"_id\":\"a\",\"text\":\"x\"}}\n{{\"_id\":{bad},\"text\":\"y\"}}\n"),
            );
            let err = read_corpus(&p, &opts(false)).unwrap_err();
            assert!(matches!(err, Error::Corpus { line: l, .. } if l == line), "{bad}: {err}");
            let msg = err.to_string();
            assert!(msg.contains("c.jsonl:2") && msg.contains("JSON string"), "{bad}: {msg}");
            let c = read_corpus(&p, &opts(true)).unwrap();
            assert_eq!(ids(&c), ["a"], "{bad}");
            assert_eq!(c.skipped.len(), 1);
        }
    }

    #[test]
    fn blank_ids_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        write(&p, "{\"_id\":\"a\",\"text\":\"x\"}\n{\"_id\":\" \\t\",\"text\":\"y\"}\n");
        let err = read_corpus(&p, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("c.jsonl:2") && err.contains("blank"), "{err}");
        write(&p, "{\"_id\":\"\",\"text\":\"y\"}\n");
        let err = read_corpus(&p, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("c.jsonl:1") && err.contains("empty"), "{err}");
        assert_eq!(check_id("a b"), Ok(()));
        assert!(check_id("\u{3000}").is_err());
    }

    #[test]
    fn conflicting_repeated_id_names_its_line_and_skip_bad_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        write(
            &p,
            "{\"_id\":\"a\",\"text\":\"one\"}\n{\"_id\":\"b\",\"text\":\"two\"}\n\
             {\"_id\":\"a\",\"text\":\"one\"}\n{\"_id\":\"a\",\"text\":\"changed\"}\n",
        );
        let err = read_corpus(&p, &opts(false)).unwrap_err();
        assert!(matches!(&err, Error::Corpus { line: 4, path, .. } if path == &p), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
        // Same content repeated is left for the indexer to count; the conflict is skipped.
        let c = read_corpus(&p, &opts(true)).unwrap();
        assert_eq!(ids(&c), ["a", "b", "a"]);
        assert_eq!(c.skipped.len(), 1);
        // With update every record stays, so the indexer can keep the last.
        let c = read_corpus(&p, &CorpusOptions { update: true, ..opts(false) }).unwrap();
        assert_eq!(c.docs.len(), 4);
        assert_eq!(c.docs[3].text, "changed");
    }

    #[test]
    fn non_regular_beir_corpus_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let beir = dir.path().join("beir");
        std::fs::create_dir_all(beir.join("corpus.jsonl")).unwrap();
        write(&beir.join("a.txt"), "not what the user meant");
        let err = read_corpus(&beir, &opts(true)).unwrap_err().to_string();
        assert!(err.contains("corpus.jsonl") && err.contains("directory"), "{err}");
        #[cfg(unix)]
        {
            let fifo_dir = dir.path().join("fifo");
            std::fs::create_dir(&fifo_dir).unwrap();
            let fifo = fifo_dir.join("corpus.jsonl");
            let ok = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
            assert!(ok.success());
            let err = read_corpus(&fifo_dir, &opts(false)).unwrap_err().to_string();
            assert!(err.contains("FIFO"), "{err}");
            let err = read_corpus(&fifo, &opts(false)).unwrap_err().to_string();
            assert!(err.contains("FIFO") && !err.contains("does not exist"), "{err}");
            // A dangling link named corpus.jsonl is an error too, not a folder of text files.
            let dangling = dir.path().join("dangling");
            std::fs::create_dir(&dangling).unwrap();
            std::os::unix::fs::symlink("nowhere.jsonl", dangling.join("corpus.jsonl")).unwrap();
            write(&dangling.join("a.txt"), "x");
            let err = read_corpus(&dangling, &opts(true)).unwrap_err().to_string();
            assert!(err.contains("corpus.jsonl"), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_and_broken_ones_reported() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("more")).unwrap();
        write(&outside.join("target.txt"), "linked text");
        write(&outside.join("more/deep.md"), "# Deep\nbody");
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        write(&files.join("a.txt"), "plain");
        symlink(outside.join("target.txt"), files.join("link.txt")).unwrap();
        symlink(outside.join("more"), files.join("linked_dir")).unwrap();
        // Not a corpus name: ignored even though it is broken.
        symlink("missing.so", files.join("lib.so")).unwrap();
        let c = read_corpus(&files, &opts(false)).unwrap();
        assert_eq!(ids(&c), ["a.txt", "link.txt", "linked_dir/deep.md"]);
        assert_eq!(c.docs[1].text, "linked text");
        assert_eq!(c.docs[2].title, "Deep");
        symlink("missing.txt", files.join("broken.txt")).unwrap();
        let err = read_corpus(&files, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("broken.txt") && err.contains("broken symbolic link"), "{err}");
        let c = read_corpus(&files, &opts(true)).unwrap();
        assert_eq!(c.docs.len(), 3);
        assert_eq!(c.skipped.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_folders_are_errors_or_skipped_under_skip_bad() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(files.join("sub")).unwrap();
        write(&files.join("a.txt"), "plain");
        write(&files.join("z.txt"), "last");
        // A link loop: walking it never ends, so it is reported like an unreadable folder.
        std::os::unix::fs::symlink("..", files.join("sub/loop")).unwrap();
        let err = read_corpus(&files, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("loop"), "{err}");
        let c = read_corpus(&files, &opts(true)).unwrap();
        assert_eq!(ids(&c), ["a.txt", "z.txt"]);
        assert_eq!(c.skipped.len(), 1);
        std::fs::remove_file(files.join("sub/loop")).unwrap();

        let locked = files.join("locked");
        std::fs::create_dir(&locked).unwrap();
        write(&locked.join("secret.txt"), "x");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads any folder; the permission case can only be checked as another user.
        if std::fs::read_dir(&locked).is_err() {
            assert!(read_corpus(&files, &opts(false)).is_err());
            let c = read_corpus(&files, &opts(true)).unwrap();
            assert_eq!(ids(&c), ["a.txt", "z.txt"]);
            assert_eq!(c.skipped.len(), 1);
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_file_names_are_refused_not_merged() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        let a = files.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
        let b = files.join(std::ffi::OsStr::from_bytes(b"caf\xff.txt"));
        // Some file systems refuse such names; nothing to test there.
        if std::fs::write(&a, "one").is_err() || std::fs::write(&b, "two").is_err() {
            return;
        }
        write(&files.join("ok.txt"), "fine");
        let err = read_corpus(&files, &opts(false)).unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8") && err.contains("rename"), "{err}");
        let c = read_corpus(&files, &opts(true)).unwrap();
        assert_eq!(ids(&c), ["ok.txt"]);
        assert_eq!(c.skipped.len(), 2);
    }
}
