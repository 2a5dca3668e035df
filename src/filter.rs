//! Metadata filters in Qdrant's filter JSON: `{"must": [{"key": "topic", "match": {"value":
//! "ocean"}}]}`, with `match.any`, `range` (numbers, or RFC 3339 / `YYYY-MM-DD` dates compared
//! as strings of one format), `is_empty` / `is_null`, and nested `must` / `should` / `must_not`.
//!
//! A [`Filter`] is parsed and validated once per request ([`Filter::parse`]) and then tested
//! against each candidate document's metadata ([`Filter::matches`]); retrieval keeps fetching
//! candidates until `k` documents pass (see `store::Database::search_dense_filtered`).

use serde_json::Value;

use crate::{Error, Result};

/// Deepest nesting of filters accepted: bounds recursion on hostile input.
const MAX_DEPTH: usize = 16;

/// A boolean combination of conditions. An empty filter matches every document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Every one of these must hold.
    pub must: Vec<Condition>,
    /// At least one of these must hold (when there are any).
    pub should: Vec<Condition>,
    /// None of these may hold.
    pub must_not: Vec<Condition>,
}

/// One test on a metadata field (a dotted `key` walks nested objects), or a nested filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The field equals this keyword, number or boolean (or, for an array field, contains it).
    Match { key: String, value: Value },
    /// The field equals (or, for an array field, contains) one of these.
    MatchAny { key: String, any: Vec<Value> },
    /// The field lies in this range.
    Range { key: String, range: Range },
    /// The field is missing, null or an empty array (`is_empty`), or missing / null (`is_null`).
    IsEmpty { key: String, null_only: bool },
    /// A nested boolean filter.
    Nested(Box<Filter>),
}

/// Bounds of a range condition: numbers, or dates (strings) compared chronologically.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// Lower bound, and whether it is inclusive (`gte`) or not (`gt`).
    pub lower: Option<(Bound, bool)>,
    /// Upper bound, and whether it is inclusive (`lte`) or not (`lt`).
    pub upper: Option<(Bound, bool)>,
}

/// One end of a range.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// A numeric bound.
    Number(f64),
    /// A date bound, kept as a normalised sortable key (see [`date_key`]).
    Date(String),
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidInput(format!("filter: {}", msg.into()))
}

impl Filter {
    /// Parses and validates a filter from its JSON; every mistake is an `InvalidInput` naming it.
    pub fn parse(json: &Value) -> Result<Filter> {
        parse_filter(json, 0)
    }

    /// Parses a filter from JSON text (the CLI's `--filter`).
    pub fn parse_str(text: &str) -> Result<Filter> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        Filter::parse(&v)
    }

    /// True when the filter has no conditions (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    /// Whether a document with this metadata passes the filter.
    pub fn matches(&self, metadata: &Value) -> bool {
        self.must.iter().all(|c| c.matches(metadata))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(metadata)))
            && !self.must_not.iter().any(|c| c.matches(metadata))
    }

    /// Whether a document whose metadata is stored as JSON text passes (unparsable or empty
    /// metadata counts as `{}`).
    pub fn matches_str(&self, metadata: &str) -> bool {
        let v = serde_json::from_str(metadata).unwrap_or(Value::Null);
        self.matches(&v)
    }
}

fn parse_filter(json: &Value, depth: usize) -> Result<Filter> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let obj = json.as_object().ok_or_else(|| bad("must be an object"))?;
    let mut f = Filter::default();
    for (k, v) in obj {
        let list = match k.as_str() {
            "must" => &mut f.must,
            "should" => &mut f.should,
            "must_not" => &mut f.must_not,
            other => return Err(bad(format!("unknown clause {other:?} (must, should, must_not)"))),
        };
        // Qdrant accepts a single condition where a list is expected.
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            Value::Null => Vec::new(),
            one => vec![one],
        };
        for c in items {
            list.push(parse_condition(c, depth + 1)?);
        }
    }
    Ok(f)
}

fn parse_condition(json: &Value, depth: usize) -> Result<Condition> {
    let obj = json.as_object().ok_or_else(|| bad("a condition must be an object"))?;
    if ["must", "should", "must_not"].iter().any(|k| obj.contains_key(*k)) {
        return Ok(Condition::Nested(Box::new(parse_filter(json, depth)?)));
    }
    for (name, null_only) in [("is_empty", false), ("is_null", true)] {
        if let Some(v) = obj.get(name) {
            let key = v
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{name} needs {{\"key\": FIELD}}")))?;
            return Ok(Condition::IsEmpty { key: field_key(key)?, null_only });
        }
    }
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a condition needs a string \"key\" (or is_empty / a nested filter)"))?;
    let key = field_key(key)?;
    if let Some(m) = obj.get("match") {
        let m = m.as_object().ok_or_else(|| bad("match must be an object"))?;
        if let Some(v) = m.get("value") {
            check_scalar(v)?;
            return Ok(Condition::Match { key, value: v.clone() });
        }
        if let Some(a) = m.get("any") {
            let any = a.as_array().ok_or_else(|| bad("match.any must be a list"))?;
            any.iter().try_for_each(check_scalar)?;
            return Ok(Condition::MatchAny { key, any: any.clone() });
        }
        return Err(bad("match needs \"value\" or \"any\""));
    }
    if let Some(r) = obj.get("range").or_else(|| obj.get("datetime_range")) {
        return Ok(Condition::Range { key, range: parse_range(r)? });
    }
    Err(bad(format!("condition on {key:?} needs match or range")))
}

fn field_key(key: &str) -> Result<String> {
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad(format!("bad field key {key:?}")));
    }
    Ok(key.to_string())
}

fn check_scalar(v: &Value) -> Result<()> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        other => Err(bad(format!("match value must be a string, number or boolean, not {other}"))),
    }
}

fn parse_range(json: &Value) -> Result<Range> {
    let obj = json.as_object().ok_or_else(|| bad("range must be an object"))?;
    let mut range = Range { lower: None, upper: None };
    for (k, v) in obj {
        let b = match v {
            Value::Number(n) => Bound::Number(n.as_f64().ok_or_else(|| bad("bad number"))?),
            Value::String(s) => Bound::Date(
                date_key(s).ok_or_else(|| bad(format!("range bound {s:?} is not a date")))?,
            ),
            Value::Null => continue,
            other => return Err(bad(format!("range bound must be a number or date, not {other}"))),
        };
        match k.as_str() {
            "gte" => range.lower = Some((b, true)),
            "gt" => range.lower = Some((b, false)),
            "lte" => range.upper = Some((b, true)),
            "lt" => range.upper = Some((b, false)),
            other => return Err(bad(format!("unknown range bound {other:?} (gt, gte, lt, lte)"))),
        }
    }
    if range.lower.is_none() && range.upper.is_none() {
        return Err(bad("range needs at least one of gt, gte, lt, lte"));
    }
    let kinds = [&range.lower, &range.upper]
        .iter()
        .filter_map(|b| b.as_ref().map(|(b, _)| matches!(b, Bound::Number(_))))
        .collect::<Vec<_>>();
    if kinds.windows(2).any(|w| w[0] != w[1]) {
        return Err(bad("range mixes a number and a date"));
    }
    Ok(range)
}

/// A date as a key that sorts chronologically: `YYYY-MM-DD` or RFC 3339 with a `Z` or no zone
/// (`YYYY-MM-DDTHH:MM:SS[.fff]`), padded to one width. None for anything else.
pub fn date_key(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('Z');
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 10
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return None;
    }
    let time = match s.get(10..) {
        None | Some("") => "00:00:00",
        Some(t) => {
            let t = t.strip_prefix('T').or_else(|| t.strip_prefix(' '))?;
            let tb = t.as_bytes();
            let ok = tb.len() >= 8
                && tb[2] == b':'
                && tb[5] == b':'
                && t.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_digit() || (c == ':' && (i == 2 || i == 5)) || (c == '.' && i == 8)
                });
            if !ok {
                return None;
            }
            t
        }
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    Some(format!("{}T{}.{:0<9}", &s[..10], hms, frac))
}

/// The values of a dotted field: the field itself, or each element when it is an array.
fn field<'a>(metadata: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(metadata, |v, part| v.get(part))
}

fn values(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl Range {
    fn contains(&self, v: &Value) -> bool {
        let check = |b: &(Bound, bool), lower: bool| -> bool {
            let ord = match (&b.0, v) {
                (Bound::Number(n), Value::Number(x)) => match x.as_f64() {
                    Some(x) => x.partial_cmp(n),
                    None => None,
                },
                (Bound::Date(d), Value::String(s)) => date_key(s).map(|k| k.as_str().cmp(d)),
                _ => None,
            };
            match ord {
                None => false,
                Some(o) if lower => o.is_gt() || (b.1 && o.is_eq()),
                Some(o) => o.is_lt() || (b.1 && o.is_eq()),
            }
        };
        self.lower.as_ref().is_none_or(|b| check(b, true))
            && self.upper.as_ref().is_none_or(|b| check(b, false))
    }
}

impl Condition {
    /// Whether this condition holds for a document's metadata.
    pub fn matches(&self, metadata: &Value) -> bool {
        match self {
            Condition::Match { key, value } => field(metadata, key)
                .is_some_and(|f| values(f).into_iter().any(|x| scalar_eq(x, value))),
            Condition::MatchAny { key, any } => field(metadata, key).is_some_and(|f| {
                values(f).into_iter().any(|x| any.iter().any(|a| scalar_eq(x, a)))
            }),
            Condition::Range { key, range } => field(metadata, key)
                .is_some_and(|f| values(f).into_iter().any(|x| range.contains(x))),
            Condition::IsEmpty { key, null_only } => match field(metadata, key) {
                None | Some(Value::Null) => true,
                Some(Value::Array(a)) => !null_only && a.is_empty(),
                Some(_) => false,
            },
            Condition::Nested(f) => f.matches(metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::parse(&v).unwrap()
    }

    #[test]
    fn match_value_any_and_arrays() {
        let m = json!({"topic": "ocean", "tags": ["a", "b"], "n": 3, "meta": {"lang": "en"}});
        assert!(f(json!({"must": [{"key": "topic", "match": {"value": "ocean"}}]})).matches(&m));
        assert!(!f(json!({"must": [{"key": "topic", "match": {"value": "land"}}]})).matches(&m));
        assert!(f(json!({"must": {"key": "tags", "match": {"value": "b"}}})).matches(&m));
        assert!(f(json!({"must": [{"key": "n", "match": {"any": [1, 3.0]}}]})).matches(&m));
        assert!(f(json!({"must": [{"key": "meta.lang", "match": {"value": "en"}}]})).matches(&m));
        assert!(!f(json!({"must": [{"key": "missing", "match": {"any": ["x"]}}]})).matches(&m));
        assert!(Filter::default().matches(&m));
    }

    #[test]
    fn ranges_on_numbers_and_dates() {
        let m = json!({"year": 2020, "date": "2021-06-01T12:00:00Z"});
        assert!(
            f(json!({"must": [{"key": "year", "range": {"gte": 2020, "lt": 2021}}]})).matches(&m)
        );
        assert!(!f(json!({"must": [{"key": "year", "range": {"gt": 2020}}]})).matches(&m));
        assert!(f(json!({"must": [{"key": "date", "range": {"gte": "2021-06-01"}}]})).matches(&m));
        assert!(!f(json!({"must": [{"key": "date", "range": {"lt": "2021-06-01T12:00:00"}}]}))
            .matches(&m));
        // A number field never satisfies a date range and vice versa.
        assert!(!f(json!({"must": [{"key": "year", "range": {"gte": "2000-01-01"}}]})).matches(&m));
    }

    #[test]
    fn boolean_combinations_and_is_empty() {
        let m = json!({"topic": "ocean", "tags": []});
        let should = f(json!({"should": [
            {"key": "topic", "match": {"value": "land"}},
            {"key": "topic", "match": {"value": "ocean"}}]}));
        assert!(should.matches(&m));
        assert!(
            !f(json!({"must_not": [{"key": "topic", "match": {"value": "ocean"}}]})).matches(&m)
        );
        assert!(f(json!({"must": [{"is_empty": {"key": "tags"}}, {"is_empty": {"key": "x"}}]}))
            .matches(&m));
        assert!(!f(json!({"must": [{"is_null": {"key": "tags"}}]})).matches(&m));
        let nested =
            f(json!({"must": [{"must_not": [{"key": "topic", "match": {"value": "x"}}]}]}));
        assert!(nested.matches(&m));
        // "exists" is must_not is_empty.
        assert!(!f(json!({"must_not": [{"is_empty": {"key": "tags"}}]})).matches(&m));
    }

    #[test]
    fn bad_filters_are_invalid_input() {
        for bad in [
            json!([]),
            json!({"maybe": []}),
            json!({"must": [{"match": {"value": 1}}]}),
            json!({"must": [{"key": "a", "match": {"value": {"x": 1}}}]}),
            json!({"must": [{"key": "a", "match": {}}]}),
            json!({"must": [{"key": "a", "range": {}}]}),
            json!({"must": [{"key": "a", "range": {"gte": 1, "lt": "2020-01-01"}}]}),
            json!({"must": [{"key": "a", "range": {"gte": "yesterday"}}]}),
            json!({"must": [{"key": "a..b", "match": {"value": 1}}]}),
            json!({"must": [{"key": "a"}]}),
        ] {
            let e = Filter::parse(&bad).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e}");
        }
        assert!(Filter::parse_str("{not json").is_err());
        let mut deep = json!({"must": []});
        for _ in 0..40 {
            deep = json!({"must": [deep]});
        }
        assert!(Filter::parse(&deep).is_err());
    }

    #[test]
    fn date_keys_sort_chronologically() {
        assert_eq!(date_key("2021-06-01").unwrap(), date_key("2021-06-01T00:00:00Z").unwrap());
        assert!(date_key("2021-06-01T00:00:00.5").unwrap() > date_key("2021-06-01").unwrap());
        assert!(date_key("2021-6-1").is_none());
        assert!(date_key("2021-06-01+02:00").is_none());
    }
}
