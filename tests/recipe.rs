//! The trained-encoder recipe on the tiny model: distinct `<sN>` rows, case-keeping BoW
//! targets, one passage builder for training and indexing, several and label-free training
//! sources, negatives sampled below the top ranks, and trained deltas that load over the base.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::llama2vec_options as opts;
use engine::encoder::testing::write_tiny_model;
use engine::encoder::{Embed, Encoder, TextKind};
use engine::train::data::{json_text, merge_retrieval, unlabeled_pairs, TrainQuery};
use engine::train::finetune::{negatives_from_ranking, TrainSources};
use engine::train::loss::bow_targets;

fn load(path: &Path) -> Encoder {
    Encoder::load(path, opts(), DType::F32, &Device::Cpu).unwrap()
}

/// A base without the `<sN>` tokens gets 16 rows that differ pairwise (the old initialisation,
/// every row the vocabulary mean, fails this), and the same rows on every load.
#[test]
fn added_special_rows_are_pairwise_distinct_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(&dir.path().join("m"), 3).unwrap();
    let enc = load(&path);
    assert_eq!(enc.tokenizer().added_special(), 16);
    let ids = enc.tokenizer().special_ids().to_vec();
    let embed = enc.model().weights.embed.to_dtype(DType::F32).unwrap();
    let rows: Vec<Vec<f32>> =
        ids.iter().map(|&i| embed.get(i as usize).unwrap().to_vec1::<f32>().unwrap()).collect();
    for a in 0..rows.len() {
        for b in a + 1..rows.len() {
            let d = rows[a].iter().zip(&rows[b]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(d > 1e-2, "<s{}> and <s{}> rows are (nearly) identical: {d}", a + 1, b + 1);
        }
    }
    let again = load(&path).model().weights.embed.to_dtype(DType::F32).unwrap();
    let d = (embed - again).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(d, 0.0, "the added rows must not change between loads");
}

/// BoW targets keep case: "Protein" targets the byte "P", not "p" (BPE is case-sensitive).
#[test]
fn bow_targets_keep_case() {
    let dir = tempfile::tempdir().unwrap();
    let enc = load(&write_tiny_model(&dir.path().join("m"), 3).unwrap());
    let tok = enc.tokenizer();
    let targets = bow_targets(tok, "The Protein").unwrap();
    let upper = tok.encode("P").unwrap()[0];
    let lower = tok.encode("p").unwrap()[0];
    assert!(targets.contains(&upper), "{targets:?}");
    assert!(!targets.contains(&lower), "{targets:?}");
    // "The" is a stop word whatever its case.
    assert!(!targets.contains(&tok.encode("T").unwrap()[0]), "{targets:?}");
}

/// Training passages come from the function that builds indexed passages.
#[test]
fn training_and_indexing_build_passages_alike() {
    for (title, text) in [("Title", "Body text."), ("", "Only text."), ("Only title", "")] {
        let v = serde_json::json!({"_id": "1", "title": title, "text": text});
        assert_eq!(json_text(&v).unwrap(), engine::pipeline::passage_text(title, text));
    }
}

#[test]
fn negatives_skip_the_top_ranks_and_positives() {
    let q = TrainQuery { text: "q".into(), positives: vec![3], negatives: vec![9] };
    // Ranking 3 (positive) 5 7 1 2 8: skip 2 non-positive ranks (5, 7), keep 3.
    let negs = negatives_from_ranking(&q, vec![3, 5, 7, 1, 2, 8], 2, 3);
    assert_eq!(negs, vec![9, 1, 2, 8]);
}

#[test]
fn merged_sources_keep_each_query_on_its_own_passages() {
    let a = engine::train::data::RetrievalData {
        ids: vec!["d1".into(), "d2".into()],
        passages: vec!["a one".into(), "a two".into()],
        queries: vec![TrainQuery { text: "qa".into(), positives: vec![1], negatives: vec![0] }],
    };
    let b = engine::train::data::RetrievalData {
        ids: vec!["d1".into()],
        passages: vec!["b one".into()],
        queries: vec![TrainQuery { text: "qb".into(), positives: vec![0], negatives: vec![] }],
    };
    let m = merge_retrieval(vec![a, b]);
    assert_eq!(m.passages.len(), 3);
    assert_eq!(m.ids, vec!["0:d1", "0:d2", "1:d1"]);
    assert_eq!(m.passages[m.queries[0].positives[0]], "a two");
    assert_eq!(m.passages[m.queries[0].negatives[0]], "a one");
    assert_eq!(m.passages[m.queries[1].positives[0]], "b one");
}

fn doc(id: &str, title: &str, text: &str) -> engine::pipeline::Document {
    engine::pipeline::Document {
        id: id.into(),
        title: title.into(),
        text: text.into(),
        metadata: serde_json::Value::Null,
    }
}

#[test]
fn label_free_pairs_from_titles_and_sentences() {
    let docs = vec![
        doc("a", "Tides", "The moon pulls the sea."),
        doc("b", "", "Bread rises. Yeast makes gas. Ovens bake it."),
        doc("c", "", "One sentence only"),
    ];
    let d = unlabeled_pairs(&docs, 1).unwrap();
    assert_eq!(d.queries.len(), 2, "the one-sentence untitled document gives no pair");
    assert_eq!(d.queries[0].text, "Tides");
    assert_eq!(d.passages[d.queries[0].positives[0]], "The moon pulls the sea.");
    let (q, p) = (&d.queries[1].text, &d.passages[d.queries[1].positives[0]]);
    assert!(!p.contains(q.as_str()), "the query sentence is removed from its positive");
    assert_eq!(p.split(". ").count(), 2, "{p}");
    assert!(unlabeled_pairs(&docs[2..], 1).is_err());
}

fn tiny_corpus(dir: &Path) -> PathBuf {
    let topics = ["rivers", "stars", "bread", "engines", "forests", "music"];
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let t = topics[i % topics.len()];
            serde_json::json!({"_id": format!("d{i}"), "title": format!("About {t} {i}"),
                "text": format!("This page describes {t}. Many facts about {t} follow here.")})
            .to_string()
        })
        .collect();
    let p = dir.join("corpus.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn tiny_train_config(dir: &Path, extra: &str) -> engine::config::Config {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[train]\nbatch_size = 4\ncheckpoint_every = 0\nvalidation_queries = 0\n\
             validation_corpus = 0\ngroup_size = 2\nmax_query_tokens = 16\n\
             max_passage_tokens = 32\nlr = 1e-2\ntemperature = 0.02\nlog_every = 1\n{extra}"
        ),
    )
    .unwrap();
    engine::config::Config::load(Some(&p)).unwrap()
}

/// Fine-tunes the tiny model on the tiny corpus's label-free pairs; returns (base, output,
/// report).
fn finetune_label_free(
    d: &Path,
    extra: &str,
    steps: usize,
) -> (PathBuf, PathBuf, engine::train::TrainingReport) {
    let model = write_tiny_model(&d.join("m"), 5).unwrap();
    let cfg = tiny_train_config(d, extra);
    let out = d.join("tuned");
    let o = engine::train::TrainOverrides { max_steps: Some(steps), ..Default::default() };
    let unlabeled = [tiny_corpus(d)];
    let sources = TrainSources { labeled: &[], unlabeled: &unlabeled };
    let r = engine::train::finetune::run(&cfg, &model, &sources, &out, &o, false).unwrap();
    (model, out, r)
}

fn logged_losses(out: &Path) -> Vec<f64> {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint").join("state.json")).unwrap(),
    )
    .unwrap();
    state["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("infonce").and_then(|v| v.as_f64()))
        .collect()
}

/// Fine-tuning on a corpus without labels lowers the contrastive loss and writes an encoder
/// that loads, reports itself trained, and embeds.
#[test]
fn label_free_finetune_lowers_its_loss_and_writes_a_loadable_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out, r) = finetune_label_free(dir.path(), "trainable = \"all\"\n", 24);
    assert_eq!(r.steps, 24);
    let losses = logged_losses(&out);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.8, "loss did not fall: {losses:?}");
    let enc = load(&out);
    assert!(enc.trained());
    assert!(enc.fingerprint().trained);
    assert!(!load(&model).trained(), "the base is not trained");
    let v = enc.embed(&["rivers"], TextKind::Query).unwrap();
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
}

/// A delta (only the trained layers) loads over the base to the same encoder as the full
/// trained folder, up to bf16 rounding of the stored tensors, and is smaller.
#[test]
fn exported_delta_loads_over_the_base_like_the_trained_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows_frozen = "trainable = \"last:1\"\ntrain_special_rows = false\n";
    let (model, out, _) = finetune_label_free(d, rows_frozen, 3);

    let delta = d.join("delta");
    let bin = env!("CARGO_BIN_EXE_engine");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = std::process::Command::new(bin)
        .args(["export-delta", "--model", &s(&out), "--base", &s(&model), "--out", &s(&delta)])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let names: Vec<&str> = report["manifest"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("model.layers.1.") || *n == "model.norm.weight"));
    assert!(!names.is_empty());
    let full = std::fs::metadata(out.join("model.safetensors")).unwrap().len();
    assert!(report["bytes"].as_u64().unwrap() < full / 2);

    let (a, b) = (load(&out), load(&delta));
    assert!(b.trained(), "the delta carries the training report");
    let texts = ["rivers flow", "the stars burn"];
    for kind in [TextKind::Query, TextKind::Passage] {
        let va = a.embed(&texts, kind).unwrap();
        let vb = b.embed(&texts, kind).unwrap();
        for (x, y) in va.iter().zip(&vb) {
            let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            assert!(cos > 0.999, "delta encoder differs from the trained folder: cos {cos}");
        }
    }
    // A wrong base is refused by its hash.
    let other = write_tiny_model(&d.join("other"), 6).unwrap();
    std::fs::copy(other.join("model.safetensors"), model.join("model.safetensors")).unwrap();
    let err = Encoder::load(&delta, opts(), DType::F32, &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("sha256"), "{err}");
}

/// Two mining rounds: the second, half-way, ranks the corpus with the encoder being trained;
/// several sources (a labelled triple file and an unlabelled corpus) train together.
#[test]
fn second_mining_round_and_mixed_sources_train() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = write_tiny_model(&d.join("m"), 5).unwrap();
    let corpus = tiny_corpus(d);
    let triples = d.join("triples.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"query": format!("question {i}"), "positive": format!("answer {i}")})
                .to_string()
        })
        .collect();
    std::fs::write(&triples, lines.join("\n")).unwrap();
    let cfg =
        tiny_train_config(d, "trainable = \"last:1\"\nmining_rounds = 2\nhard_negative_skip = 1\n");
    let out = d.join("tuned");
    let o = engine::train::TrainOverrides { max_steps: Some(4), ..Default::default() };
    let (labeled, unlabeled) = ([triples.clone()], [corpus.clone()]);
    let sources = TrainSources { labeled: &labeled, unlabeled: &unlabeled };
    let r = engine::train::finetune::run(&cfg, &model, &sources, &out, &o, false).unwrap();
    assert_eq!(r.steps, 4);
    assert_eq!(r.hyper.mining_rounds, 2);
    assert_eq!(r.examples, 6 + 12);
    assert_eq!(r.data, vec![triples, corpus]);
    assert!(load(&out).trained());
}
