//! `engine bench filter`: recall of filtered search by selectivity, through the real search
//! path ([`SearchIndex::search_with`]) of a real database, for each ANN backend.
//!
//! The corpus is synthetic: `n` documents, each one passage with a random unit vector, a text
//! of random words from a small vocabulary (so BM25 has matches) and a keyword field `tag`
//! whose 100 values are spread uniformly at random, so a filter accepting 1, 10 or 50 of them
//! keeps 1 %, 10 % or 50 % of the corpus. The truth is an exact scan over the documents that
//! pass the filter: cosine for dense, BM25 over every match for bm25, and for hybrid the fusion
//! of the exact dense and BM25 lists at the depth hybrid fuses.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{SearchIndex, SearchMode, SearchOptions, FUSION_DEPTH};
use crate::encoder::EncoderFingerprint;
use crate::error::Result;
use crate::filter::Filter;
use crate::fusion::Fusion;
use crate::index::{AnnParams, Backend};
use crate::store::{Database, DbOptions, NewDocument, NewPassage};

/// Distinct values of the `tag` field (each 1 % of the corpus).
const TAGS: usize = 100;
/// Words of the texts; a two-word query then matches about 8 % of the corpus.
const VOCABULARY: usize = 200;
/// Words per text.
const TEXT_WORDS: usize = 8;

/// What to measure.
#[derive(Debug, Clone)]
pub struct FilterBenchOptions {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub k: usize,
    pub seed: u64,
    pub backends: Vec<Backend>,
    pub params: AnnParams,
    /// Percent of the corpus each filter keeps (each a multiple of 1).
    pub selectivities: Vec<usize>,
    /// How hybrid fuses (`eval.fusion`).
    pub fusion: Fusion,
}

/// One backend, mode and selectivity.
#[derive(Debug, Clone, Serialize)]
pub struct FilterBenchRow {
    pub backend: String,
    pub mode: SearchMode,
    /// Percent of the corpus the filter keeps.
    pub selectivity: usize,
    /// Mean over queries of the documents that pass the filter (and, for bm25, contain a query
    /// word): how many hits could come back.
    pub matching: f64,
    /// Mean recall@k against the exact filtered ranking (a hit tied with the k-th exact score
    /// counts as found).
    pub recall: f64,
    /// Queries answered with min(k, matching) hits, of all queries.
    pub full: usize,
    pub queries: usize,
    /// Every hit passed the filter.
    pub all_match: bool,
    /// Queries per second, one thread.
    pub qps: f64,
}

/// A synthetic document's tag and text, and its vector.
struct Doc {
    tag: usize,
    text: String,
    vector: Vec<f32>,
}

fn unit(rng: &mut ChaCha8Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    // Uniform in a cube: never the zero vector in practice.
    crate::index::normalize(&mut v).expect("a random vector has a direction");
    v
}

fn id(i: usize) -> String {
    format!("d{i:07}")
}

/// The filter keeping the documents whose tag is below `percent` (tags are uniform over 100).
fn tag_filter(percent: usize) -> Result<Filter> {
    let tags: Vec<String> = (0..percent.min(TAGS)).map(|t| format!("t{t:02}")).collect();
    Filter::parse(&serde_json::json!({ "must": [{ "key": "tag", "match": { "any": tags } }] }))
}

/// Builds the corpus into a database in `dir` per backend and measures every mode and
/// selectivity; `progress` gets a line per step.
pub fn run(
    opts: &FilterBenchOptions,
    dir: &std::path::Path,
    progress: impl Fn(&str),
) -> Result<Vec<FilterBenchRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut tags: Vec<usize> = (0..opts.n).map(|i| i % TAGS).collect();
    tags.shuffle(&mut rng);
    let docs: Vec<Doc> = tags
        .into_iter()
        .map(|tag| {
            let words: Vec<String> =
                (0..TEXT_WORDS).map(|_| format!("w{:03}", rng.gen_range(0..VOCABULARY))).collect();
            Doc { tag, text: words.join(" "), vector: unit(&mut rng, opts.dim) }
        })
        .collect();
    let queries: Vec<(String, Vec<f32>)> = (0..opts.queries)
        .map(|_| {
            let words: Vec<String> =
                (0..2).map(|_| format!("w{:03}", rng.gen_range(0..VOCABULARY))).collect();
            (words.join(" "), unit(&mut rng, opts.dim))
        })
        .collect();
    let fingerprint = EncoderFingerprint {
        model_hash: "synthetic-filter-bench".into(),
        pooling: "none".into(),
        template: "none".into(),
        dim: opts.dim,
        trained: false,
        model_path: None,
    };
    let mut rows = Vec::new();
    for (b, &backend) in opts.backends.iter().enumerate() {
        let t = Instant::now();
        let db_dir = dir.join(backend.to_string());
        let db_opts =
            DbOptions { backend, params: opts.params.clone(), chunk_tokens: 512, chunk_overlap: 0 };
        let db = Database::create_or_open(&db_dir, &fingerprint, &db_opts)?;
        for (c, chunk) in docs.chunks(1000).enumerate() {
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(j, d)| NewDocument {
                    id: id(c * 1000 + j),
                    title: String::new(),
                    text: d.text.clone(),
                    metadata: serde_json::json!({ "tag": format!("t{:02}", d.tag) }),
                    hash: String::new(),
                    passages: vec![NewPassage {
                        start: 0,
                        end: d.text.len(),
                        vector: d.vector.clone(),
                        cache_key: None,
                    }],
                })
                .collect();
            db.put_documents(batch)?;
        }
        let index = SearchIndex::open(db, true)?;
        progress(&format!(
            "{backend}: {} documents indexed in {:.1} s",
            opts.n,
            t.elapsed().as_secs_f64()
        ));
        // BM25 does not depend on the ANN backend: measured with the first only.
        let modes: &[SearchMode] = if b == 0 {
            &[SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid]
        } else {
            &[SearchMode::Dense, SearchMode::Hybrid]
        };
        for &percent in &opts.selectivities {
            let filter = tag_filter(percent)?;
            for &mode in modes {
                let row = measure(&index, &docs, &queries, opts, backend, mode, percent, &filter)?;
                progress(&format!(
                    "{backend} {} {percent}%: recall@{} {:.3}, {}/{} full, {:.0} QPS",
                    mode.as_str(),
                    opts.k,
                    row.recall,
                    row.full,
                    row.queries,
                    row.qps
                ));
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// The exact filtered ranking of one query in `mode`, best first, at most `depth` long.
fn exact(
    index: &SearchIndex,
    docs: &[Doc],
    query: &(String, Vec<f32>),
    mode: SearchMode,
    percent: usize,
    depth: usize,
    fusion: &Fusion,
) -> Result<Vec<(String, f32)>> {
    let dense = |depth: usize| {
        let mut all: Vec<(String, f32)> = docs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.tag < percent)
            .map(|(i, d)| (id(i), d.vector.iter().zip(&query.1).map(|(a, b)| a * b).sum()))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(depth);
        all
    };
    let bm25 = |depth: usize| -> Result<Vec<(String, f32)>> {
        let lex = index.lexical().ok_or_else(|| crate::Error::Lexical("no BM25 index".into()))?;
        let mut all = lex.search(&query.0, docs.len())?;
        all.retain(|(doc, _)| {
            doc[1..].parse::<usize>().is_ok_and(|i| docs.get(i).is_some_and(|d| d.tag < percent))
        });
        all.truncate(depth);
        Ok(all)
    };
    Ok(match mode {
        SearchMode::Dense => dense(depth),
        SearchMode::Bm25 => bm25(depth)?,
        SearchMode::Hybrid => {
            let d = FUSION_DEPTH.max(depth);
            fusion.fuse(&dense(d), &bm25(d)?, depth)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn measure(
    index: &SearchIndex,
    docs: &[Doc],
    queries: &[(String, Vec<f32>)],
    opts: &FilterBenchOptions,
    backend: Backend,
    mode: SearchMode,
    percent: usize,
    filter: &Filter,
) -> Result<FilterBenchRow> {
    let k = opts.k;
    let search = SearchOptions {
        k,
        fusion: opts.fusion,
        filter: Some(filter),
        score_threshold: None,
        ef: None,
    };
    let started = Instant::now();
    let mut answers = Vec::with_capacity(queries.len());
    for q in queries {
        answers.push(index.search_with(mode, &q.0, Some(&q.1), &search)?.hits);
    }
    let qps = queries.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let (mut recall, mut matching, mut full, mut all_match) = (0.0, 0.0, 0, true);
    for (q, hits) in queries.iter().zip(&answers) {
        let truth = exact(index, docs, q, mode, percent, k, &opts.fusion)?;
        // How many documents could be hits: all passing the filter (dense, hybrid) or those
        // that also hold a query word (bm25).
        let possible = match mode {
            SearchMode::Bm25 => {
                exact(index, docs, q, mode, percent, docs.len(), &opts.fusion)?.len()
            }
            _ => docs.iter().filter(|d| d.tag < percent).count(),
        };
        matching += possible as f64;
        let passes = |doc: &str| {
            doc[1..].parse::<usize>().is_ok_and(|i| docs.get(i).is_some_and(|d| d.tag < percent))
        };
        all_match &= hits.iter().all(|h| passes(&h.id));
        if hits.len() == possible.min(k) {
            full += 1;
        }
        if truth.is_empty() {
            recall += 1.0;
            continue;
        }
        let kth = truth.last().map(|t| t.1).unwrap_or(f32::MIN);
        let found = hits
            .iter()
            .filter(|h| {
                passes(&h.id) && (truth.iter().any(|t| t.0 == h.id) || h.score >= kth - 1e-6)
            })
            .count()
            .min(truth.len());
        recall += found as f64 / truth.len() as f64;
    }
    let n = queries.len().max(1) as f64;
    Ok(FilterBenchRow {
        backend: backend.to_string(),
        mode,
        selectivity: percent,
        matching: matching / n,
        recall: recall / n,
        full,
        queries: queries.len(),
        all_match,
        qps,
    })
}

/// The rows as a Markdown table.
pub fn format_table(rows: &[FilterBenchRow], k: usize) -> String {
    let mut out = format!(
        "| backend | mode | selectivity | matching docs (mean) | recall@{k} | queries with min({k}, matching) hits | all hits pass | QPS |\n|---|---|---:|---:|---:|---:|---|---:|\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} % | {:.0} | {:.3} | {}/{} | {} | {:.0} |\n",
            r.backend,
            r.mode.as_str(),
            r.selectivity,
            r.matching,
            r.recall,
            r.full,
            r.queries,
            if r.all_match { "yes" } else { "NO" },
            r.qps
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run: every mode brings k hits that all pass, at full recall on the flat backend.
    #[test]
    fn a_small_run_finds_every_filtered_hit_on_the_flat_backend() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FilterBenchOptions {
            n: 2000,
            dim: 16,
            queries: 5,
            k: 10,
            seed: 3,
            backends: vec![Backend::Flat],
            params: AnnParams::from_config(&crate::config::Config::default().index),
            selectivities: vec![1, 50],
            fusion: Fusion::Rrf { k: 60 },
        };
        let rows = run(&opts, dir.path(), |_| {}).unwrap();
        assert_eq!(rows.len(), 6);
        for r in &rows {
            assert!(r.all_match, "{r:?}");
            assert_eq!(r.full, r.queries, "{r:?}");
            assert!(r.recall > 0.999, "{r:?}");
        }
    }
}
