//! Helpers shared by the integration tests (each test file includes this module).
#![allow(dead_code)]

pub mod pg;

use engine::encoder::{EncoderOptions, Padding, Pooling, Template};

/// The method's encoder settings with short limits, for the tiny test model.
pub fn llama2vec_options() -> EncoderOptions {
    EncoderOptions {
        pooling: Pooling::Llama2Vec,
        template: Template::Llama2Vec,
        padding: Padding::Left,
        max_query_tokens: 32,
        max_passage_tokens: 48,
        batch_size: 8,
    }
}
