//! engine: a dense-retrieval search engine whose encoder is a decoder-only LLM adapted for
//! retrieval by the Llama2Vec method.
//!
//! # Code map
//!
//! Data flows down this list; no module imports one above it except through the types it is
//! handed.
//!
//! | stage | module | what lives there |
//! |---|---|---|
//! | settings | [`config`] | `configs/default.toml` overlaid by `--config` and `ENGINE__SECTION__KEY` |
//! | text → vector | [`encoder`] | GGUF / HF / delta loading, the Llama forward (CPU bf16 kernels, candle elsewhere), Llama2Vec templates and pooling |
//! | corpus → passages | [`pipeline`] | corpus readers (BEIR, JSONL, folders), chunking, `passage_text`, the resumable indexing loop |
//! | storage | [`store`] | the [`store::Store`] trait; the database folder (sled documents and vectors, the manifest, the folder names); [`store::postgres`]: the same in PostgreSQL + pgvector (`--store postgres://...`) |
//! | vectors → neighbours | [`index`] | the [`index::AnnIndex`] trait and its HNSW, FAISS and flat backends |
//! | words → BM25 | [`lexical`] | the tantivy index beside the store |
//! | retrieval | [`search`], [`fusion`], [`filter`] | dense / BM25 / hybrid over one database, score fusion, Qdrant-style metadata filters; `engine bench filter` ([`search::filter_bench`]) |
//! | HTTP | [`server`] | axum routes, the batching encoder queue, keys, limits, metrics, the UI assets |
//! | training | [`train`] | Llama2Vec adaptation (EBAE + EBAR) and contrastive fine-tuning |
//! | measurement | [`eval`] | qrels, runs, trec_eval-equal metrics |
//!
//! The command line (`src/cli/`, the binary) parses flags once into these modules' types.
//!
//! # How to add …
//!
//! * **an ANN backend**: implement [`index::AnnIndex`] in a file under `src/index/`, add a
//!   variant to [`index::Backend`] and its arms in [`index::new_index`] and
//!   [`index::load_index`], and run the shared recall test (`tests/ann_recall.rs`) over it.
//! * **an HTTP endpoint**: a handler in `src/server/routes/`, its route in `server::router`,
//!   its request and response in `server::openapi`; errors are [`server::error::ApiError`]
//!   (JSON with a 4xx status) and a test in `tests/server.rs` through `tests/common/server.rs`.
//! * **a config key**: a field in the section's struct in [`config`] and its default in
//!   `configs/default.toml` (every key must have one: the file is the list of keys); it is then
//!   settable as `ENGINE__SECTION__KEY` with no further code. A key with a fixed set of
//!   values takes an enum from `config::values` (serde for the file, `clap::ValueEnum` for the
//!   flag), so a bad value fails at load naming the key.

pub mod config;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod filter;
pub mod fusion;
pub mod index;
pub mod lexical;
pub mod pipeline;
pub mod search;
pub mod server;
pub mod snapshot;
pub mod snippet;
pub mod store;
pub mod train;

pub use error::{Error, Result};
