//! Tokenizer wrapper: builds a `tokenizers` tokenizer from GGUF metadata (byte-level BPE) or
//! loads `tokenizer.json`, and knows the ids of the Llama2Vec special tokens.

use ahash::AHashMap as HashMap;
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{Error, Result};

/// A token's byte range in the encoded text.
pub type Span = (usize, usize);

/// Number of Llama2Vec special tokens: `<s1>`..`<s8>` (SELF) and `<s9>`..`<s16>` (NEXT).
pub const NUM_SPECIAL: usize = 16;

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// A tokenizer plus what the encoder needs to know about it.
#[derive(Clone)]
pub struct LlmTokenizer {
    inner: Tokenizer,
    /// Ids the tokenizer's post-processor (or GGUF's add_bos flag) puts before a sequence.
    leading: Vec<u32>,
    /// Ids of `<s1>`..`<s16>`, read from the tokenizer (not assumed contiguous).
    special: [u32; NUM_SPECIAL],
    /// How many of the special tokens were missing and appended by us (the model must grow its
    /// embedding by this many rows).
    added_special: usize,
    pad_id: u32,
    /// Longest vocabulary entry in bytes: no token covers more input than this.
    max_token_bytes: usize,
}

impl std::fmt::Debug for LlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTokenizer")
            .field("vocab", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

/// Token data read from a GGUF file's `tokenizer.ggml.*` metadata.
pub struct GgufVocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    /// llama.cpp token types; 3 = control (special), 4 = user defined.
    pub token_types: Vec<i32>,
    pub pre: Option<String>,
    pub bos: Option<u32>,
    pub add_bos: bool,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
}

impl LlmTokenizer {
    /// Builds the byte-level BPE tokenizer described by a GGUF file.
    pub fn from_gguf(v: GgufVocab) -> Result<Self> {
        let vocab: HashMap<String, u32> =
            v.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = v
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(format!("malformed merge {m:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut tok = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        // SmolLM2's tokenizer splits digits individually before the GPT-2 byte-level regex.
        let pre: PreTokenizerWrapper = if v.pre.as_deref() == Some("smollm") {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        tok.with_pre_tokenizer(Some(pre));
        tok.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = v
            .tokens
            .iter()
            .zip(&v.token_types)
            .filter(|(_, ty)| **ty == 3 || **ty == 4)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        tok.add_special_tokens(&specials);
        let leading = match (v.add_bos, v.bos) {
            (true, Some(b)) => vec![b],
            _ => vec![],
        };
        let pad = v.pad.or(v.unk).unwrap_or(0);
        Self::finish(tok, Some(leading), pad, v.tokens.len())
    }

    /// Loads a Hugging Face `tokenizer.json`. `model_vocab` is the embedding's row count.
    pub fn from_file(path: &Path, model_vocab: usize) -> Result<Self> {
        let tok = Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("cannot read tokenizer.json: {e}")))?;
        // Llama's reference pads with unk (id 0); anything masked works, 0 always exists.
        let pad = tok.token_to_id("<unk>").unwrap_or(0);
        Self::finish(tok, None, pad, model_vocab)
    }

    fn finish(
        mut tok: Tokenizer,
        leading: Option<Vec<u32>>,
        pad_id: u32,
        model_vocab: usize,
    ) -> Result<Self> {
        // Truncation and padding are done by the encoder, which knows the template parts.
        tok.with_truncation(None).map_err(tok_err)?;
        tok.with_padding(None);
        let leading = match leading {
            Some(l) => l,
            None => {
                // Whatever the post-processor prepends (e.g. Llama's BOS) is the leading part.
                let with = tok.encode("a", true).map_err(tok_err)?;
                let without = tok.encode("a", false).map_err(tok_err)?;
                let n = with.get_ids().len().saturating_sub(without.get_ids().len());
                let prefix = &with.get_ids()[..n];
                if with.get_ids()[n..] == *without.get_ids() {
                    prefix.to_vec()
                } else {
                    vec![]
                }
            }
        };
        let names: Vec<String> = (1..=NUM_SPECIAL).map(|i| format!("<s{i}>")).collect();
        let missing: Vec<AddedToken> = names
            .iter()
            .filter(|n| tok.token_to_id(n).is_none())
            .map(|n| AddedToken::from(n.clone(), true))
            .collect();
        let added_special = missing.len();
        if added_special > 0 {
            tok.add_special_tokens(&missing);
        }
        let mut special = [0u32; NUM_SPECIAL];
        for (i, n) in names.iter().enumerate() {
            special[i] = tok.token_to_id(n).ok_or_else(|| tok_err(format!("{n} missing")))?;
            if added_special > 0 && (special[i] as usize) >= model_vocab + added_special {
                return Err(tok_err(format!("{n} got id {} beyond the vocabulary", special[i])));
            }
        }
        let max_token_bytes = tok.get_vocab(true).keys().map(String::len).max().unwrap_or(1).max(1);
        Ok(Self { inner: tok, leading, special, added_special, pad_id, max_token_bytes })
    }

    /// Whether `text` certainly has more than `tokens` tokens, decided from its byte length
    /// alone (no token covers more than the longest vocabulary entry; the factor 2 leaves room
    /// for normalizers that shrink text). Lets callers refuse huge inputs before tokenizing.
    pub fn surely_longer_than(&self, text: &str, tokens: usize) -> bool {
        text.len() > tokens.saturating_mul(self.max_token_bytes).saturating_mul(2)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn special_ids(&self) -> &[u32; NUM_SPECIAL] {
        &self.special
    }

    pub fn added_special(&self) -> usize {
        self.added_special
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Ids put before every sequence (BOS where the model uses one).
    pub fn leading_ids(&self) -> &[u32] {
        &self.leading
    }

    /// Ids of `text` with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Ids and byte offsets of `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Writes `tokenizer.json` (with the special tokens included).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tok_err)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
