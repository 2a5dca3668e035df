//! Hybrid retrieval: combining a dense and a BM25 ranking of the same corpus.
//!
//! Two methods, chosen by `eval.fusion`:
//! * reciprocal-rank fusion (`rrf`, Cormack et al. 2009): `score(d) = Σ 1 / (rrf_k + rank(d))`
//!   over the lists that contain `d`, rank from 1. It needs no score calibration: cosine
//!   similarities and BM25 scores live on unrelated scales.
//! * convex combination (`convex`, the default): each list's scores are min-max normalised to
//!   [0, 1], then `alpha · dense + (1 − alpha) · bm25`; a document missing from a list gets 0
//!   from it. Its `alpha` must be tuned per encoder; the default 0.2 is the shipped encoder's,
//!   chosen on two collections, where it beats BM25 and RRF falls below it (docs/results.md).
//!
//! Inputs are ranked lists of `(doc id, score)`, best first; an id appearing twice in one list
//! counts once, at its best rank. Output is sorted by fused score descending, ties by id
//! ascending, so the result is deterministic.

use std::collections::HashMap;

pub use crate::config::FusionMethod;
use crate::error::{Error, Result};

/// Fusion method (`eval.fusion` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal-rank fusion with constant `k` (`eval.rrf_k`, 60 by default).
    Rrf { k: usize },
    /// Min-max normalised convex combination; `alpha` weighs the dense list
    /// (`eval.hybrid_alpha`).
    Convex { alpha: f64 },
}

impl Fusion {
    /// From the `[eval]` section of the configuration.
    pub fn from_config(c: &crate::config::EvalConfig) -> Result<Self> {
        match c.fusion {
            FusionMethod::Rrf => Ok(Fusion::Rrf { k: c.rrf_k }),
            FusionMethod::Convex => {
                if !(0.0..=1.0).contains(&c.hybrid_alpha) {
                    return Err(Error::Config(format!(
                        "eval.hybrid_alpha must be in [0, 1], got {}",
                        c.hybrid_alpha
                    )));
                }
                Ok(Fusion::Convex { alpha: c.hybrid_alpha })
            }
        }
    }

    /// The fusion of one search: the configuration's default overlaid by a request's settings
    /// (`engine search --fusion/--alpha/--rrf-k`, the server's `fusion`, `alpha`, `rrf_k`).
    /// `alpha` alone means convex fusion and `rrf_k` alone RRF, since each belongs to one
    /// method; a setting of the other method than the one named, both without `fusion`, or a
    /// value out of range is [`Error::InvalidInput`] naming the field.
    pub fn for_request(c: &crate::config::EvalConfig, r: &FusionRequest) -> Result<Self> {
        let default = Fusion::from_config(c)?;
        let bad = |m: String| Err(Error::InvalidInput(m));
        let rrf = match (r.fusion, r.alpha, r.rrf_k) {
            (Some(method), ..) => method == FusionMethod::Rrf,
            (None, Some(_), Some(_)) => {
                return bad("alpha weighs convex fusion and rrf_k is RRF's constant: send one of \
                            them, or name the method in fusion"
                    .into())
            }
            (None, Some(_), None) => false,
            (None, None, Some(_)) => true,
            (None, None, None) => return Ok(default),
        };
        if rrf {
            if r.alpha.is_some() {
                return bad("alpha weighs convex fusion; it has no meaning with fusion rrf".into());
            }
            let k = r.rrf_k.unwrap_or(c.rrf_k);
            if r.rrf_k.is_some() && !(1..=RRF_K_MAX).contains(&k) {
                return bad(format!("rrf_k must be in 1..={RRF_K_MAX}, got {k}"));
            }
            Ok(Fusion::Rrf { k })
        } else {
            if r.rrf_k.is_some() {
                return bad("rrf_k is RRF's constant; it has no meaning with fusion convex".into());
            }
            let alpha = r.alpha.unwrap_or(c.hybrid_alpha);
            if !(0.0..=1.0).contains(&alpha) {
                return bad(format!("alpha must be in [0, 1], got {alpha}"));
            }
            Ok(Fusion::Convex { alpha })
        }
    }

    /// Fuses the two lists and keeps the best `limit`.
    pub fn fuse(
        &self,
        dense: &[(String, f32)],
        bm25: &[(String, f32)],
        limit: usize,
    ) -> Vec<(String, f32)> {
        match *self {
            Fusion::Rrf { k } => rrf(&[dense, bm25], k, limit),
            Fusion::Convex { alpha } => convex(dense, bm25, alpha, limit),
        }
    }
}

/// Largest `rrf_k` a request may ask for: far past it every rank weighs the same.
pub const RRF_K_MAX: usize = 1000;

/// A search's own fusion settings, each overriding the configuration's when given (see
/// [`Fusion::for_request`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FusionRequest {
    /// The method, whose parameters the others are.
    pub fusion: Option<FusionMethod>,
    /// Weight of the dense list in convex fusion, in [0, 1].
    pub alpha: Option<f64>,
    /// RRF's constant, in 1..=[`RRF_K_MAX`].
    pub rrf_k: Option<usize>,
}

impl FusionRequest {
    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        *self == FusionRequest::default()
    }

    /// The name of the first setting given (for "applies to hybrid mode only" errors).
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("fusion", self.fusion.is_some()),
            ("alpha", self.alpha.is_some()),
            ("rrf_k", self.rrf_k.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

/// Reciprocal-rank fusion of any number of ranked lists.
pub fn rrf(lists: &[&[(String, f32)]], k: usize, limit: usize) -> Vec<(String, f32)> {
    let mut fused: HashMap<&str, f64> = HashMap::new();
    for list in lists {
        let mut seen = std::collections::HashSet::new();
        for (i, (id, _)) in list.iter().enumerate() {
            if seen.insert(id.as_str()) {
                *fused.entry(id).or_default() += 1.0 / (k as f64 + (i + 1) as f64);
            }
        }
    }
    finish(fused, limit)
}

/// Min-max normalised convex combination: `alpha · dense + (1 − alpha) · bm25`.
pub fn convex(
    dense: &[(String, f32)],
    bm25: &[(String, f32)],
    alpha: f64,
    limit: usize,
) -> Vec<(String, f32)> {
    let mut fused: HashMap<&str, f64> = HashMap::new();
    for (list, weight) in [(dense, alpha), (bm25, 1.0 - alpha)] {
        for (id, s) in min_max(list) {
            *fused.entry(id).or_default() += weight * s;
        }
    }
    finish(fused, limit)
}

/// Scores mapped to [0, 1] by `(s − min) / (max − min)`, keeping each id's best score. When
/// all scores are equal (or the list has one entry) every document gets 1: they are all the
/// list's best match, and 0 would make the list vanish from the fusion. Non-finite scores are
/// treated as the list's minimum.
fn min_max(list: &[(String, f32)]) -> HashMap<&str, f64> {
    let finite = list.iter().map(|(_, s)| *s as f64).filter(|s| s.is_finite());
    let (lo, hi) =
        finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let mut out: HashMap<&str, f64> = HashMap::new();
    for (id, s) in list {
        let s = *s as f64;
        let n = if !s.is_finite() {
            0.0
        } else if hi > lo {
            (s - lo) / (hi - lo)
        } else {
            1.0
        };
        let e = out.entry(id.as_str()).or_insert(n);
        *e = e.max(n);
    }
    out
}

fn finish(fused: HashMap<&str, f64>, limit: usize) -> Vec<(String, f32)> {
    let mut out: Vec<(&str, f64)> = fused.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    out.truncate(limit);
    out.into_iter().map(|(id, s)| (id.to_string(), s as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, f32)]) -> Vec<(String, f32)> {
        items.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }
    fn ids(v: &[(String, f32)]) -> Vec<&str> {
        v.iter().map(|(d, _)| d.as_str()).collect()
    }

    #[test]
    fn rrf_by_hand() {
        let dense = list(&[("a", 0.9), ("b", 0.8), ("c", 0.7)]);
        let bm25 = list(&[("c", 12.0), ("a", 10.0), ("d", 3.0)]);
        let out = Fusion::Rrf { k: 60 }.fuse(&dense, &bm25, 10);
        // a: 1/61 + 1/62 = 0.032522; c: 1/63 + 1/61 = 0.032266; b: 1/62 = 0.016129;
        // d: 1/63 = 0.015873.
        assert_eq!(ids(&out), ["a", "c", "b", "d"]);
        assert!((out[0].1 as f64 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        assert!((out[3].1 as f64 - 1.0 / 63.0).abs() < 1e-7);
        // limit, and an empty list leaves the other one's order.
        assert_eq!(ids(&Fusion::Rrf { k: 60 }.fuse(&dense, &bm25, 2)), ["a", "c"]);
        assert_eq!(ids(&rrf(&[&dense, &[]], 60, 10)), ["a", "b", "c"]);
        // Duplicates in one list count once, at the best rank.
        let dup = list(&[("x", 1.0), ("x", 0.5)]);
        assert!((rrf(&[&dup], 60, 10)[0].1 as f64 - 1.0 / 61.0).abs() < 1e-7);
    }

    #[test]
    fn convex_by_hand() {
        let dense = list(&[("a", 0.9), ("b", 0.7), ("c", 0.5)]);
        let bm25 = list(&[("c", 20.0), ("d", 15.0), ("a", 10.0)]);
        // dense normalised: a 1, b 0.5, c 0; bm25: c 1, d 0.5, a 0.
        // alpha 0.5: a 0.5, b 0.25, c 0.5, d 0.25 -> ties by id: a, c, b, d.
        let out = convex(&dense, &bm25, 0.5, 10);
        assert_eq!(ids(&out), ["a", "c", "b", "d"]);
        assert!((out[0].1 - 0.5).abs() < 1e-6 && (out[2].1 - 0.25).abs() < 1e-6);
        // alpha 0.8: a 0.8, b 0.4, c 0.2, d 0.1.
        let out = convex(&dense, &bm25, 0.8, 10);
        assert_eq!(ids(&out), ["a", "b", "c", "d"]);
        assert!((out[3].1 - 0.1).abs() < 1e-6);
        // alpha 1 = dense only (bm25-only docs get 0 and sort last).
        assert_eq!(ids(&convex(&dense, &bm25, 1.0, 3)), ["a", "b", "c"]);
        // A single-entry (constant) list normalises to 1, not NaN.
        let out = convex(&list(&[("z", 0.3)]), &[], 0.5, 10);
        assert_eq!(out, list(&[("z", 0.5)]));
        assert!(convex(&[], &[], 0.5, 10).is_empty());
    }

    #[test]
    fn from_config() {
        let mut c = crate::config::Config::default().eval;
        assert_eq!(Fusion::from_config(&c).unwrap(), Fusion::Convex { alpha: 0.2 });
        c.fusion = FusionMethod::Rrf;
        assert_eq!(Fusion::from_config(&c).unwrap(), Fusion::Rrf { k: 60 });
        c.fusion = FusionMethod::Convex;
        c.hybrid_alpha = 1.5;
        assert!(matches!(Fusion::from_config(&c), Err(Error::Config(_))));
    }

    #[test]
    fn a_request_overlays_the_config() {
        let mut c = crate::config::Config::default().eval;
        let req = |fusion: Option<&str>, alpha: Option<f64>, rrf_k: Option<usize>| FusionRequest {
            fusion: fusion.map(|f| f.parse().unwrap()),
            alpha,
            rrf_k,
        };
        let f = |r: FusionRequest| Fusion::for_request(&c, &r);
        assert_eq!(f(req(None, None, None)).unwrap(), Fusion::Convex { alpha: 0.2 });
        assert_eq!(f(req(None, Some(0.7), None)).unwrap(), Fusion::Convex { alpha: 0.7 });
        assert_eq!(f(req(None, None, Some(5))).unwrap(), Fusion::Rrf { k: 5 });
        assert_eq!(f(req(Some("rrf"), None, None)).unwrap(), Fusion::Rrf { k: 60 });
        assert_eq!(f(req(Some("convex"), Some(1.0), None)).unwrap(), Fusion::Convex { alpha: 1.0 });
        // Each bad value names its field.
        for (r, field) in [
            (req(None, Some(1.5), None), "alpha"),
            (req(None, Some(f64::NAN), None), "alpha"),
            (req(None, None, Some(0)), "rrf_k"),
            (req(None, None, Some(RRF_K_MAX + 1)), "rrf_k"),
            (req(Some("rrf"), Some(0.5), None), "alpha"),
            (req(Some("convex"), None, Some(10)), "rrf_k"),
            (req(None, Some(0.5), Some(10)), "alpha"),
        ] {
            match f(r.clone()) {
                Err(Error::InvalidInput(m)) => assert!(m.starts_with(field), "{r:?}: {m}"),
                other => panic!("{r:?}: {other:?}"),
            }
        }
        // With RRF configured, alpha alone still means convex, from the configured weight up.
        c.fusion = FusionMethod::Rrf;
        assert_eq!(
            Fusion::for_request(&c, &req(Some("convex"), None, None)).unwrap(),
            Fusion::Convex { alpha: 0.2 }
        );
        assert_eq!(req(None, None, Some(3)).first_given(), Some("rrf_k"));
        assert!(req(None, None, None).is_empty());
    }
}
