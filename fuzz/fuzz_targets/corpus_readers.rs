//! The corpus, queries and qrels readers on arbitrary file contents: they return documents
//! with valid ids or an error, and never panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use engine::config::Config;
use engine::pipeline::beir;
use engine::pipeline::corpus::{check_id, read_corpus, CorpusOptions};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else { return };
    let dir = scratch();
    let opts = CorpusOptions::from_config(&Config::default().index, selector & 1 == 1);
    match selector >> 1 & 3 {
        0 => {
            let path = dir.join("docs.jsonl");
            std::fs::write(&path, content).unwrap();
            if let Ok(corpus) = read_corpus(&path, &opts) {
                assert!(corpus.docs.iter().all(|d| check_id(&d.id).is_ok()));
            }
        }
        1 => {
            let beir_dir = dir.join("beir");
            std::fs::create_dir_all(&beir_dir).unwrap();
            std::fs::write(beir_dir.join("corpus.jsonl"), content).unwrap();
            if let Ok(corpus) = read_corpus(&beir_dir, &opts) {
                assert!(corpus.docs.iter().all(|d| check_id(&d.id).is_ok()));
            }
        }
        2 => {
            let path = dir.join("queries.jsonl");
            std::fs::write(&path, content).unwrap();
            let _ = beir::read_queries(&path);
        }
        _ => {
            let path = dir.join("qrels.tsv");
            std::fs::write(&path, content).unwrap();
            let _ = beir::read_qrels(&path);
        }
    }
});
