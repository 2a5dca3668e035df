//! Corpus readers: a BEIR folder (`corpus.jsonl`), any JSONL file (configurable field names),
//! or a folder of `.txt` / `.md` files. Ids are always strings: a JSON id is a string or an
//! integer that fits in 64 bits (written out digit for digit); any other number is refused,
//! since a float cannot be turned back into the text the file had (`1.50` would become `1.5`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

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
}

impl CorpusOptions {
    /// The field names of `[index]` in the configuration.
    pub fn from_config(c: &IndexConfig, skip_bad: bool) -> Self {
        CorpusOptions {
            id_field: c.id_field.clone(),
            title_field: c.title_field.clone(),
            text_field: c.text_field.clone(),
            skip_bad,
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

/// Reads the corpus at `path`, detecting its format.
pub fn read_corpus(path: &Path, opts: &CorpusOptions) -> Result<Corpus> {
    if path.is_dir() {
        let beir = path.join("corpus.jsonl");
        if beir.is_file() {
            let (docs, skipped) = read_jsonl(&beir, opts)?;
            return Ok(Corpus { format: CorpusFormat::Beir, docs, skipped });
        }
        let (docs, skipped) = read_files(path, opts)?;
        return Ok(Corpus { format: CorpusFormat::Files, docs, skipped });
    }
    if path.is_file() {
        let (docs, skipped) = read_jsonl(path, opts)?;
        return Ok(Corpus { format: CorpusFormat::Jsonl, docs, skipped });
    }
    Err(Error::NotFound(format!("corpus {} does not exist", path.display())))
}

fn corpus_err(path: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Corpus { path: path.to_path_buf(), line, message: message.into() }
}

/// Reads JSONL line by line as bytes, so a non-UTF-8 line is reported with its number rather
/// than aborting the whole read.
pub fn read_jsonl(path: &Path, opts: &CorpusOptions) -> Result<(Vec<Document>, Vec<Error>)> {
    let file = std::fs::File::open(path).map_err(|e| corpus_err(path, 0, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| corpus_err(path, line_no + 1, e.to_string()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let parsed = parse_line(&buf, opts).map_err(|m| corpus_err(path, line_no, m));
        match parsed {
            Ok(Some(doc)) => docs.push(doc),
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
    let id = match obj.remove(&opts.id_field) {
        Some(v) => json_id(&v).map_err(|m| format!("field {:?}: {m}", opts.id_field))?,
        None => return Err(format!("missing id field {:?}", opts.id_field)),
    };
    let title = take_text(&mut obj, &opts.title_field, false)?;
    let text = take_text(&mut obj, &opts.text_field, true)?;
    let metadata = match obj.len() {
        0 => Value::Null,
        1 if obj.contains_key("metadata") => obj.remove("metadata").unwrap_or(Value::Null),
        _ => Value::Object(obj),
    };
    Ok(Some(Document { id, title, text, metadata }))
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
        None if required => Err(format!("missing text field {field:?}")),
        None => Ok(String::new()),
    }
}

/// A folder of `.txt` / `.md` files (recursively, hidden entries skipped, sorted by path).
/// Id = path relative to the folder with `/` separators; title = first markdown heading, else
/// the file stem.
pub fn read_files(root: &Path, opts: &CorpusOptions) -> Result<(Vec<Document>, Vec<Error>)> {
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|e| corpus_err(e.path().unwrap_or(root), 0, e.to_string()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        let is_md = matches!(ext.as_deref(), Some("md" | "markdown"));
        if !is_md && ext.as_deref() != Some("txt") {
            continue;
        }
        match read_text_file(root, path, is_md) {
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

fn read_text_file(root: &Path, path: &Path, is_md: bool) -> Result<Document> {
    let bytes = std::fs::read(path).map_err(|e| corpus_err(path, 0, e.to_string()))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(corpus_err(path, line, format!("file is not valid UTF-8 (byte {at})")));
        }
    };
    let rel: PathBuf = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let id =
        rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
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
        }
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
}
