//! Splitting long documents into passages of at most `chunk_tokens` tokens, overlapping by
//! `overlap` tokens, cut at token boundaries (from `Embed::token_spans`) so no token is halved.

/// A passage of a document: byte range and token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub tokens: usize,
}

/// Splits `text` given its token byte spans. A text of at most `chunk_tokens` tokens is one
/// passage covering the whole text; otherwise windows of `chunk_tokens` tokens advance by
/// `chunk_tokens - overlap`. The first passage starts at 0 and the last ends at `text.len()`
/// so no leading or trailing text is lost. Ranges are moved outwards to char boundaries in case
/// a tokenizer reports byte offsets inside a multi-byte character.
pub fn split(
    text: &str,
    spans: &[(usize, usize)],
    chunk_tokens: usize,
    overlap: usize,
) -> Vec<Chunk> {
    let n = spans.len();
    let chunk_tokens = chunk_tokens.max(1);
    let step = chunk_tokens.saturating_sub(overlap).max(1);
    if n <= chunk_tokens {
        return vec![Chunk { start: 0, end: text.len(), tokens: n }];
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let j = (i + chunk_tokens).min(n);
        let start = if i == 0 { 0 } else { floor_boundary(text, spans[i].0) };
        let end = if j == n { text.len() } else { ceil_boundary(text, spans[j - 1].1) };
        out.push(Chunk { start, end: end.max(start), tokens: j - i });
        if j == n {
            break;
        }
        i += step;
    }
    out
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws_spans(t: &str) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let mut start = None;
        for (i, c) in t.char_indices() {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    v.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            v.push((s, t.len()));
        }
        v
    }

    #[test]
    fn short_text_is_one_passage() {
        let t = "a b c";
        assert_eq!(split(t, &ws_spans(t), 5, 1), vec![Chunk { start: 0, end: 5, tokens: 3 }]);
    }

    #[test]
    fn long_text_windows_overlap_and_cover_everything() {
        let t = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 ";
        let c = split(t, &ws_spans(t), 4, 1);
        let texts: Vec<&str> = c.iter().map(|c| &t[c.start..c.end]).collect();
        assert_eq!(texts, ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9 "]);
        assert!(c.iter().all(|c| c.tokens <= 4));
    }

    #[test]
    fn offsets_inside_a_char_are_widened() {
        let t = "é é é";
        // Deliberately bad spans that cut 'é' (2 bytes) in half.
        let spans = vec![(0, 1), (3, 4), (6, 7)];
        for c in split(t, &spans, 1, 0) {
            assert!(t.is_char_boundary(c.start) && t.is_char_boundary(c.end));
        }
    }
}
