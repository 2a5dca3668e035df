//! engine: a dense-retrieval search engine whose encoder is a decoder-only LLM adapted for
//! retrieval by the Llama2Vec method.
//!
//! Data flow: [`pipeline`] reads a corpus and batches passages through the [`encoder`]; vectors
//! and documents go to the [`store`] (sled) and an ANN [`index`]; [`lexical`] keeps a BM25
//! index beside them and [`fusion`] merges the two rankings; [`server`] answers HTTP; [`train`]
//! adapts and fine-tunes the encoder; [`eval`] measures retrieval quality.

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
