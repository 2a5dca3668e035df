//! `GET /fields` (and `/collections/{name}/fields`): the metadata keys of a database's first
//! documents, with sample values, so a client (the web UI) can offer filters without knowing the
//! data. A sample, not an index: the first [`FIELDS_SCAN`] documents in id order are read.

use std::collections::BTreeMap;

use axum::Json;
use serde_json::{json, Value};

use super::blocking;
use crate::server::auth::ReadAccess;
use crate::server::collections::Collection;
use crate::server::error::ApiError;
use crate::server::state::Backing;

/// Documents read per request.
pub const FIELDS_SCAN: usize = 1000;
/// Distinct sample values kept per key.
pub const FIELD_VALUES: usize = 20;

/// What is known of one top-level metadata key.
#[derive(Default)]
struct Field {
    documents: usize,
    /// JSON kinds seen: string, number, boolean, array, object, null.
    kinds: Vec<&'static str>,
    /// Distinct scalars seen (of arrays: their items), in first-seen order.
    values: Vec<Value>,
    more_values: bool,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Field {
    fn add(&mut self, v: &Value) {
        self.documents += 1;
        if !self.kinds.contains(&kind(v)) {
            self.kinds.push(kind(v));
        }
        let scalars: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for s in scalars {
            // A filter's match takes strings, numbers and booleans.
            if !matches!(s, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                continue;
            }
            if self.values.contains(s) {
                continue;
            }
            if self.values.len() == FIELD_VALUES {
                self.more_values = true;
            } else {
                self.values.push(s.clone());
            }
        }
    }
}

/// `GET /fields`: `{"fields": [{key, kinds, documents, values, more_values}], "scanned",
/// "complete"}`; a `--lexical-only` database stores no metadata, so it has no fields.
pub async fn fields(_auth: ReadAccess, c: Collection) -> Result<Json<Value>, ApiError> {
    let loaded = c.loaded;
    let (page, more) = blocking(move || match &loaded.backing {
        Backing::Dense(d) => Ok(d.db().scroll_documents(None, FIELDS_SCAN)?),
        Backing::LexicalOnly { .. } => Ok((Vec::new(), false)),
    })
    .await?;
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    for (_, doc) in &page {
        let Ok(Value::Object(meta)) = serde_json::from_str::<Value>(&doc.metadata) else {
            continue;
        };
        for (key, v) in &meta {
            fields.entry(key.clone()).or_default().add(v);
        }
    }
    let fields: Vec<Value> = fields
        .into_iter()
        .map(|(key, f)| {
            json!({
                "key": key,
                "kinds": f.kinds,
                "documents": f.documents,
                "values": f.values,
                "more_values": f.more_values,
            })
        })
        .collect();
    Ok(Json(json!({ "fields": fields, "scanned": page.len(), "complete": !more })))
}
