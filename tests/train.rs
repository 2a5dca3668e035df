//! Training tests on the tiny model: gradient checks against finite differences, the adaptation
//! attention mask, overfitting, checkpoint/resume reproducibility, and the CLI end to end.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::llama2vec_options as opts;
use engine::encoder::model::{BatchInputs, ForwardMode, Llama};
use engine::encoder::testing::write_tiny_model;
use engine::encoder::tokenizer::LlmTokenizer;
use engine::encoder::{Encoder, Pooling, Template, TextKind};
use engine::train::loss::{
    adapt_losses, bow_targets, embed_with_grad, info_nce, AdaptExample, AdaptLayout,
};
use engine::train::optim::{AdamW, GradAccum};
use engine::train::params::{TrainState, Trainable};

fn tiny(dir: &Path, dtype: DType) -> (Llama, LlmTokenizer) {
    let path = write_tiny_model(&dir.join("m"), 11).unwrap();
    let (m, t, _) = Encoder::load(&path, opts(), dtype, &Device::Cpu).unwrap().into_parts();
    (m, t)
}

fn example(tok: &LlmTokenizer, a: &str, b: &str) -> AdaptExample {
    AdaptExample {
        passage: tok.encode(a).unwrap(),
        self_targets: bow_targets(tok, a).unwrap(),
        next_targets: bow_targets(tok, b).unwrap(),
    }
}

const TEXTS: [(&str, &str); 3] = [
    ("Cats sleep on warm mats.", "Dogs bark at night."),
    ("Rivers flow into seas.", "Rain feeds rivers."),
    ("Stars burn hydrogen fuel.", "Planets orbit stars."),
];

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

const CHECKED: [&str; 2] =
    ["model.layers.0.self_attn.v_proj.weight", "model.layers.1.mlp.up_proj.weight"];

/// Autograd vs central finite differences for the largest-gradient coordinates of two tensors.
fn grad_check(state: &TrainState, loss: &dyn Fn(&Llama) -> Tensor, what: &str) {
    grad_check_vars(state, loss, what, &CHECKED)
}

fn grad_check_vars(
    state: &TrainState,
    loss: &dyn Fn(&Llama) -> Tensor,
    what: &str,
    names: &[&str],
) {
    let l = loss(&state.model().unwrap());
    let grads = l.backward().unwrap();
    let mut checked = 0;
    for &name in names {
        let var = &state.vars.iter().find(|(n, _)| n == name).unwrap().1;
        let g: Vec<f64> =
            grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        let w0 = var.as_tensor().copy().unwrap();
        let flat: Vec<f64> = w0.flatten_all().unwrap().to_vec1().unwrap();
        for &i in order.iter().take(3) {
            let eps = 1e-3;
            let eval = |delta: f64| {
                let mut v = flat.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, w0.shape(), &Device::Cpu).unwrap()).unwrap();
                scalar(&loss(&state.model().unwrap()))
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&w0).unwrap();
            let tol = 0.03 * g[i].abs() + 5e-4;
            assert!((fd - g[i]).abs() <= tol, "{what} {name}[{i}]: autograd {} vs fd {fd}", g[i]);
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * names.len());
}

#[test]
fn every_loss_gradient_matches_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(dir.path(), DType::F64);
    let state = TrainState::new(&model, Trainable::All, 4, 8.0, tok.special_ids(), 1).unwrap();
    let layout = AdaptLayout::new(&tok).unwrap();
    let exs: Vec<AdaptExample> = TEXTS.iter().map(|(a, b)| example(&tok, a, b)).collect();
    let refs: Vec<&AdaptExample> = exs.iter().collect();
    let vocab = model.config.vocab_size;
    let batch = layout.batch(&refs, vocab, DType::F64, &Device::Cpu).unwrap();
    grad_check(&state, &|m| adapt_losses(m, &batch).unwrap().lm, "lm");
    grad_check(&state, &|m| adapt_losses(m, &batch).unwrap().ebae, "ebae");
    grad_check(&state, &|m| adapt_losses(m, &batch).unwrap().ebar, "ebar");
    let prep = |t: &str, k| {
        engine::encoder::template::prepare(&tok, t, k, Template::Llama2Vec, Pooling::Llama2Vec, 32)
            .unwrap()
    };
    let qs: Vec<_> = TEXTS.iter().map(|(_, b)| prep(b, TextKind::Query)).collect();
    let ps: Vec<_> = TEXTS
        .iter()
        .flat_map(|(a, b)| [prep(a, TextKind::Passage), prep(b, TextKind::Passage)])
        .collect();
    let nce = |m: &Llama| {
        let q = embed_with_grad(m, &qs.iter().collect::<Vec<_>>(), 0, None).unwrap();
        let p = embed_with_grad(m, &ps.iter().collect::<Vec<_>>(), 0, None).unwrap();
        info_nce(&q, &p, 2, 0.5).unwrap()
    };
    grad_check(&state, &nce, "infonce");
}

/// NEXT positions must not see the SELF suffix (their hidden states equal encoding
/// "passage + NEXT suffix" alone, at the same positions), and SELF must not see NEXT.
#[test]
fn adaptation_mask_and_shared_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(dir.path(), DType::F32);
    let layout = AdaptLayout::new(&tok).unwrap();
    let ex = example(&tok, "A short passage here.", "Next one.");
    let vocab = model.config.vocab_size;
    let hidden = |l: &AdaptLayout| {
        let b = l.batch(&[&ex], vocab, DType::F32, &Device::Cpu).unwrap();
        model.forward(&b.inputs, ForwardMode::Fast).unwrap().squeeze(0).unwrap()
    };
    let row = layout.row(&ex.passage);
    let (s0, s1) = row.self_range;
    let (n0, n1) = row.next_range;
    let max_diff = |a: &Tensor, b: &Tensor| {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    };
    let base = hidden(&layout);
    // Change every SELF-suffix token: NEXT positions are unchanged, SELF positions change.
    let mut other = layout.clone();
    other.self_suffix = other.self_suffix.iter().map(|&i| (i + 7) % 200).collect();
    let changed = hidden(&other);
    assert!(
        max_diff(&base.narrow(0, n0, n1 - n0).unwrap(), &changed.narrow(0, n0, n1 - n0).unwrap())
            < 1e-5
    );
    assert!(
        max_diff(&base.narrow(0, s0, s1 - s0).unwrap(), &changed.narrow(0, s0, s1 - s0).unwrap())
            > 1e-3
    );
    // Change the NEXT suffix: SELF positions are unchanged.
    let mut other = layout.clone();
    other.next_suffix = other.next_suffix.iter().map(|&i| (i + 5) % 200).collect();
    let changed = hidden(&other);
    assert!(max_diff(&base.narrow(0, 0, s1).unwrap(), &changed.narrow(0, 0, s1).unwrap()) < 1e-6);
    // NEXT equals the plain causal encoding of lead + passage + NEXT suffix.
    let mut ids = layout.lead.clone();
    ids.extend(&ex.passage);
    ids.extend(&layout.next_suffix);
    let n = ids.len();
    let pos: Vec<u32> = (0..n as u32).collect();
    let inp =
        BatchInputs::causal(&[ids], &[pos], &[vec![true; n]], DType::F32, &Device::Cpu).unwrap();
    let alone = model.forward(&inp, ForwardMode::Fast).unwrap().squeeze(0).unwrap();
    let k = n1 - n0;
    assert!(max_diff(&alone.narrow(0, n - k, k).unwrap(), &base.narrow(0, n0, k).unwrap()) < 1e-4);
}

/// Minimises `loss` alone for `steps` AdamW steps; returns (first, last) values.
fn overfit(
    state: &TrainState,
    loss: &dyn Fn(&Llama) -> Tensor,
    steps: usize,
    lr: f64,
) -> (f64, f64) {
    let mut opt = AdamW::new(&state.vars, 0.0).unwrap();
    let first = scalar(&loss(&state.model().unwrap()));
    for _ in 0..steps {
        let l = loss(&state.model().unwrap());
        let mut acc = GradAccum::new(state.vars.len());
        acc.add(&state.vars, &l.backward().unwrap()).unwrap();
        opt.step(&state.vars, &acc.finish(&state.vars).unwrap(), lr).unwrap();
    }
    (first, scalar(&loss(&state.model().unwrap())))
}

#[test]
fn each_loss_overfits_a_tiny_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(dir.path(), DType::F32);
    let layout = AdaptLayout::new(&tok).unwrap();
    let exs: Vec<AdaptExample> = TEXTS.iter().map(|(a, b)| example(&tok, a, b)).collect();
    let refs: Vec<&AdaptExample> = exs.iter().collect();
    let batch = layout.batch(&refs, model.config.vocab_size, DType::F32, &Device::Cpu).unwrap();
    // A bag-of-words loss cannot go below ln|T| (uniform over the target set): compare excess.
    let floor = |f: fn(&AdaptExample) -> &Vec<u32>| {
        exs.iter().map(|e| (f(e).len() as f64).ln()).sum::<f64>() / exs.len() as f64
    };
    type LossOf<'a> = Box<dyn Fn(&Llama) -> Tensor + 'a>;
    let cases: Vec<(&str, LossOf, f64)> = vec![
        ("lm", Box::new(|m: &Llama| adapt_losses(m, &batch).unwrap().lm), 0.0),
        (
            "ebae",
            Box::new(|m: &Llama| adapt_losses(m, &batch).unwrap().ebae),
            floor(|e| &e.self_targets),
        ),
        (
            "ebar",
            Box::new(|m: &Llama| adapt_losses(m, &batch).unwrap().ebar),
            floor(|e| &e.next_targets),
        ),
    ];
    for (name, loss, floor) in cases {
        let state = TrainState::new(&model, Trainable::All, 4, 8.0, tok.special_ids(), 1).unwrap();
        let (a, b) = overfit(&state, &*loss, 40, 1e-2);
        assert!(b - floor < 0.2 * (a - floor), "{name}: {a} -> {b} (floor {floor})");
    }
    let prep = |t: &str, k| {
        engine::encoder::template::prepare(&tok, t, k, Template::Llama2Vec, Pooling::Llama2Vec, 32)
            .unwrap()
    };
    let qs: Vec<_> = TEXTS.iter().map(|(_, b)| prep(b, TextKind::Query)).collect();
    let ps: Vec<_> = TEXTS
        .iter()
        .flat_map(|(a, b)| [prep(a, TextKind::Passage), prep(b, TextKind::Passage)])
        .collect();
    let nce = |m: &Llama| {
        let q = embed_with_grad(m, &qs.iter().collect::<Vec<_>>(), 0, None).unwrap();
        let p = embed_with_grad(m, &ps.iter().collect::<Vec<_>>(), 0, None).unwrap();
        info_nce(&q, &p, 2, 0.05).unwrap()
    };
    for kind in [Trainable::Lora, Trainable::Last(1)] {
        let state = TrainState::new(&model, kind, 4, 8.0, tok.special_ids(), 1).unwrap();
        let (a, b) = overfit(&state, &nce, 40, 1e-2);
        assert!(b < 0.2 * a, "infonce {kind:?}: {a} -> {b}");
    }
}

/// `last:N` without trainable `<sN>` rows runs the layers below N without autograd: the loss is
/// unchanged, the gradients of the trained layers still match finite differences, and nothing
/// below them is a var. With the rows (the reference), every layer stays in the graph.
#[test]
fn last_n_with_frozen_special_rows_cuts_the_graph_below_n() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = tiny(dir.path(), DType::F64);
    let layout = AdaptLayout::new(&tok).unwrap();
    let exs: Vec<AdaptExample> = TEXTS.iter().map(|(a, b)| example(&tok, a, b)).collect();
    let refs: Vec<&AdaptExample> = exs.iter().collect();
    let batch = layout.batch(&refs, model.config.vocab_size, DType::F64, &Device::Cpu).unwrap();

    let with_rows =
        TrainState::new(&model, Trainable::Last(1), 4, 8.0, tok.special_ids(), 1).unwrap();
    assert_eq!(with_rows.frozen_prefix(), 0);
    let frozen = TrainState::new(&model, Trainable::Last(1), 4, 8.0, &[], 1).unwrap();
    assert_eq!(frozen.frozen_prefix(), 1);
    assert!(frozen
        .vars
        .iter()
        .all(|(n, _)| n.starts_with("model.layers.1.") || n == "model.norm.weight"));

    let full = adapt_losses(&model, &batch).unwrap();
    let cut = adapt_losses(&frozen.model().unwrap(), &batch).unwrap();
    for (a, b) in [(&full.lm, &cut.lm), (&full.ebae, &cut.ebae), (&full.ebar, &cut.ebar)] {
        assert!((scalar(a) - scalar(b)).abs() < 1e-6, "{} vs {}", scalar(a), scalar(b));
    }
    let names = ["model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.up_proj.weight"];
    grad_check_vars(&frozen, &|m| adapt_losses(m, &batch).unwrap().total, "total", &names);

    // In f32 the frozen layers run the fused fast kernels: same losses within rounding.
    let (model, _) = tiny(dir.path(), DType::F32);
    let batch = layout.batch(&refs, model.config.vocab_size, DType::F32, &Device::Cpu).unwrap();
    let frozen = TrainState::new(&model, Trainable::Last(1), 4, 8.0, &[], 1).unwrap();
    let full = adapt_losses(&model, &batch).unwrap();
    let cut = adapt_losses(&frozen.model().unwrap(), &batch).unwrap();
    let (a, b) = (scalar(&full.total), scalar(&cut.total));
    assert!((a - b).abs() < 1e-4 * a.abs(), "{a} vs {b}");
    let grads = cut.total.backward().unwrap();
    for (name, var) in &frozen.vars {
        assert!(grads.get(var.as_tensor()).is_some(), "{name} got no gradient");
    }
}

fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus");
    std::fs::create_dir_all(&c).unwrap();
    for i in 0..4 {
        let text: String = (0..6)
            .map(|j| format!("Document {i} sentence {j} talks about topic {}. ", (i * 7 + j) % 5))
            .collect();
        std::fs::write(c.join(format!("d{i}.txt")), text).unwrap();
    }
    c
}

fn test_config(dir: &Path) -> engine::config::Config {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        "[train]\nmax_seq_tokens = 24\nbatch_size = 2\ncheckpoint_every = 2\nvalidation_examples = 2\n\
         validation_queries = 2\nvalidation_corpus = 4\ngroup_size = 2\nmax_query_tokens = 16\n\
         max_passage_tokens = 24\nlr = 1e-3\n",
    )
    .unwrap();
    engine::config::Config::load(Some(&p)).unwrap()
}

fn weights(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn checkpoint_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_model(&dir.path().join("m"), 5).unwrap();
    let cfg = test_config(dir.path());
    let data = vec![corpus(dir.path())];
    for trainable in ["lora", "last:1"] {
        let o = engine::train::TrainOverrides {
            max_steps: Some(4),
            trainable: Some(trainable.parse().unwrap()),
            ..Default::default()
        };
        let a = dir.path().join(format!("a-{trainable}"));
        let b = dir.path().join(format!("b-{trainable}"));
        engine::train::adapt::run(&cfg, &model, &data, &a, &o, false).unwrap();
        let half = engine::train::TrainOverrides { stop_after: Some(2), ..o.clone() };
        let r = engine::train::adapt::run(&cfg, &model, &data, &b, &half, false).unwrap();
        assert_eq!(r.steps, 2);
        let r = engine::train::adapt::run(&cfg, &model, &data, &b, &o, true).unwrap();
        assert_eq!(r.steps, 4);
        let (wa, wb) = (weights(&a), weights(&b));
        for (name, t) in &wa {
            let d = (t - &wb[name]).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-6, "{trainable} {name}");
        }
        // A changed hyper-parameter refuses to resume.
        let other = engine::train::TrainOverrides { lr: Some(0.5), ..o.clone() };
        assert!(engine::train::adapt::run(&cfg, &model, &data, &b, &other, true).is_err());
    }
}

#[test]
fn bad_training_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_model(&dir.path().join("m"), 5).unwrap();
    let cfg = test_config(dir.path());
    let o = engine::train::TrainOverrides::default();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = engine::train::adapt::run(
        &cfg,
        &model,
        std::slice::from_ref(&empty),
        &dir.path().join("o"),
        &o,
        false,
    );
    assert!(err.unwrap_err().to_string().contains("no text"));
    let labeled = [empty.clone()];
    let sources = engine::train::finetune::TrainSources { labeled: &labeled, unlabeled: &[] };
    let err =
        engine::train::finetune::run(&cfg, &model, &sources, &dir.path().join("o"), &o, false);
    assert!(err.unwrap_err().to_string().contains("qrels"));
    let none = engine::train::finetune::TrainSources { labeled: &[], unlabeled: &[] };
    let err = engine::train::finetune::run(&cfg, &model, &none, &dir.path().join("o"), &o, false);
    assert!(err.unwrap_err().to_string().contains("--unlabeled"));
    // A bad --trainable is the command line's error, naming the values.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["adapt", "--model", "m", "--corpus", "c", "--out", "o", "--trainable", "last:x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("all | last:N (N > 0) | lora"), "{err}");
}

#[test]
fn cli_adapt_then_finetune_then_embed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = write_tiny_model(&d.join("m"), 5).unwrap();
    let conf = d.join("c.toml");
    test_config(d);
    let triples = d.join("triples.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"query": format!("question {i}"), "positive": format!("answer {i} text"),
                "negatives": [format!("other {i}")]})
            .to_string()
        })
        .collect();
    std::fs::write(&triples, lines.join("\n")).unwrap();
    let bin = env!("CARGO_BIN_EXE_engine");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (a, f) = (s(&d.join("adapted")), s(&d.join("tuned")));
    let c = s(&conf);
    let corpus = s(&corpus(d));
    run(&[
        "--config",
        &c,
        "adapt",
        "--model",
        &s(&model),
        "--corpus",
        &corpus,
        "--out",
        &a,
        "--max-steps",
        "2",
        "--trainable",
        "lora",
    ]);
    run(&[
        "--config",
        &c,
        "finetune",
        "--model",
        &a,
        "--train",
        &s(&triples),
        "--out",
        &f,
        "--max-steps",
        "2",
        "--trainable",
        "last:1",
    ]);
    for out in [&a, &f] {
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(out).join("training.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["intended_pooling"], "llama2vec");
        assert_eq!(report["steps"], 2);
        let line = run(&["--config", &c, "embed", "--model", out, "--kind", "query", "hello"]);
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert_eq!(v["embedding"].as_array().unwrap().len(), 64);
    }
}
