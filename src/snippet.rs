//! Query-biased snippets: the part of a hit's passage (or whole text) where the query's words
//! are densest, centred on them, and the words to highlight in it and in the title.
//!
//! Words are compared as BM25 compares them ([`crate::lexical`]'s default analyzer: lower-cased,
//! Snowball-stemmed, Lucene's English stop words removed), so "rise" matches "Rises" and "the"
//! matches nothing. The highlights are the words as written in the title and snippet; a client
//! marks those whole words (case-insensitively) and needs no stemmer of its own.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde::Serialize;

use crate::lexical::{analyzed_spans, Analyzer};

/// The analyzer snippets compare words with (the default BM25 one).
const ANALYZER: Analyzer = Analyzer::EnStemStop;
/// Matches considered when placing the window: enough for any snippet, and a bound on the work
/// a very long document with a very common word costs.
const MAX_MATCHES: usize = 4096;

/// A snippet and the words to highlight.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snippet {
    /// At most `max_chars` characters of the text (plus `…` marks where it was cut).
    pub text: String,
    /// The distinct words of the title and of `text` that match a query term, as written
    /// (first spelling of each, case-insensitively).
    pub highlights: Vec<String>,
}

/// The analyzed terms of a query (stop words gone, stemmed).
#[derive(Debug, Clone, Default)]
pub struct QueryTerms(HashSet<String>);

impl QueryTerms {
    pub fn new(query: &str) -> Self {
        QueryTerms(analyzed_spans(ANALYZER, query).into_iter().map(|(t, _)| t).collect())
    }

    fn matches(&self, text: &str) -> Vec<(String, Range<usize>)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut m: Vec<_> = analyzed_spans(ANALYZER, text)
            .into_iter()
            .filter(|(t, _)| self.0.contains(t))
            .collect();
        m.truncate(MAX_MATCHES);
        m
    }
}

/// The first `max` characters of `text` (trimmed, cut on a char boundary), marking the cut.
pub fn lead(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text.to_string(),
    }
}

/// The snippet of `text` for `terms`: the window of at most `max_chars` characters holding the
/// most distinct query terms (then the most matches), centred on them and cut between words;
/// the start of the text when no term occurs in it.
pub fn snippet(title: &str, text: &str, terms: &QueryTerms, max_chars: usize) -> Snippet {
    let mut highlights = Highlights::default();
    for (_, r) in terms.matches(title) {
        highlights.add(&title[r]);
    }
    let matches = terms.matches(text);
    // Byte offset of every char, and the text's end: chars are what `max_chars` counts.
    let mut offs: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    let total = offs.len();
    offs.push(text.len());
    let char_of = |byte: usize| offs.partition_point(|&b| b < byte);
    let (start, end) = if total <= max_chars || matches.is_empty() {
        (0, total.min(max_chars))
    } else {
        let spans: Vec<(usize, usize, &str)> =
            matches.iter().map(|(t, r)| (char_of(r.start), char_of(r.end), t.as_str())).collect();
        let (first, last) = best_window(&spans, max_chars);
        let (lo, hi) = (spans[first].0, spans[last].1);
        let slack = max_chars.saturating_sub(hi - lo);
        let mut start = lo.saturating_sub(slack / 2);
        let mut end = (start + max_chars).min(total);
        if end == total {
            start = total.saturating_sub(max_chars);
        }
        // Cut between words where the window leaves room: never through a matched word.
        let is_space = |c: usize| text[offs[c]..offs[c + 1]].chars().all(char::is_whitespace);
        if start > 0 && !is_space(start - 1) {
            if let Some(s) = (start..lo).find(|&c| is_space(c)) {
                start = s + 1;
            }
        }
        if end < total && !is_space(end) {
            if let Some(e) = (hi..end).rev().find(|&c| is_space(c)) {
                end = e;
            }
        }
        (start, end)
    };
    let body = text[offs[start]..offs[end]].trim();
    let snippet_text = match (start > 0, end < total) {
        _ if matches.is_empty() || total <= max_chars => lead(text, max_chars),
        (cut_start, cut_end) => {
            format!("{}{body}{}", if cut_start { "…" } else { "" }, if cut_end { "…" } else { "" })
        }
    };
    for (_, r) in &matches {
        if r.start >= offs[start] && r.end <= offs[end] {
            highlights.add(&text[r.clone()]);
        }
    }
    Snippet { text: snippet_text, highlights: highlights.0 }
}

/// The run of matches `first..=last` that fits in `max_chars` with the most distinct terms,
/// then the most matches (earliest on ties). `spans` are (start char, end char, term), in text
/// order.
fn best_window(spans: &[(usize, usize, &str)], max_chars: usize) -> (usize, usize) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut best = (0, 0, (0, 0));
    let mut last = 0;
    for first in 0..spans.len() {
        if last < first {
            last = first;
        }
        if last == first && counts.is_empty() {
            *counts.entry(spans[first].2).or_default() += 1;
        }
        while last + 1 < spans.len() && spans[last + 1].1 - spans[first].0 <= max_chars {
            last += 1;
            *counts.entry(spans[last].2).or_default() += 1;
        }
        let score = (counts.len(), last + 1 - first);
        if score > best.2 {
            best = (first, last, score);
        }
        // Slide: drop `first` from the window.
        let t = spans[first].2;
        if let Some(n) = counts.get_mut(t) {
            *n -= 1;
            if *n == 0 {
                counts.remove(t);
            }
        }
        if last == first {
            counts.clear();
        }
    }
    (best.0, best.1)
}

/// Distinct words, compared case-insensitively, in first-seen order.
#[derive(Default)]
struct Highlights(Vec<String>);

impl Highlights {
    fn add(&mut self, word: &str) {
        if !self.0.iter().any(|w| w.to_lowercase() == word.to_lowercase()) {
            self.0.push(word.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_at_the_end_of_a_long_text_is_in_the_snippet_centred_and_cut_between_words() {
        let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(40);
        let text = format!("{filler}Finally the dough Rises in a warm oven. {}", "Ends here.");
        let s = snippet("Why bread rises", &text, &QueryTerms::new("why does bread rise"), 80);
        assert!(s.text.contains("dough Rises"), "{s:?}");
        assert!(s.text.starts_with('…') && !s.text.ends_with('…'), "{s:?}");
        assert!(s.text.chars().count() <= 82, "{s:?}");
        // Cut between words: the first word after the mark is a whole word of the text.
        let first = s.text.trim_start_matches('…').split_whitespace().next().unwrap();
        assert!(text.split_whitespace().any(|w| w == first), "{first:?} in {s:?}");
        // Stemmed matches in the title and the snippet, each word once whatever its case.
        assert_eq!(s.highlights, ["Why", "bread", "rises"]);
        let s = snippet("", &text, &QueryTerms::new("rise"), 80);
        assert_eq!(s.highlights, ["Rises"]);
    }

    #[test]
    fn the_window_with_the_most_distinct_terms_wins_and_stop_words_never_match() {
        let a = "alpha ".repeat(30);
        let gap = "x ".repeat(200);
        let text = format!("{a}{gap}alpha beta gamma {gap}");
        let s = snippet("", &text, &QueryTerms::new("the alpha beta gamma"), 60);
        assert!(s.text.contains("alpha beta gamma"), "{s:?}");
        assert_eq!(s.highlights, ["alpha", "beta", "gamma"]);
        let none = snippet("The title", "the of and a", &QueryTerms::new("the a"), 60);
        assert!(none.highlights.is_empty(), "{none:?}");
        // No match: the start of the text, as before.
        let s = snippet("", &text, &QueryTerms::new("zebra"), 20);
        assert_eq!(s.text, lead(&text, 20));
        // A short text is whole.
        let s = snippet("", "  short text  ", &QueryTerms::new("text"), 20);
        assert_eq!((s.text.as_str(), s.highlights.len()), ("short text", 1));
    }
}
