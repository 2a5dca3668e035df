//! Background writes: `POST /documents?wait=false` and `POST /documents/delete?wait=false`
//! check their input, answer 202 with a task id at once, and do the work in a task whose
//! status `GET /tasks/{id}` reports (`processing`, then `succeeded` with the result the
//! waiting form would have answered, or `failed` with its error). Tasks live in this process's
//! memory: a restart forgets them, and a write it interrupted may have stored some of its
//! documents (each document is written atomically) but never reports success.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;

/// Finished tasks kept for polling; the oldest are forgotten first.
const KEEP_FINISHED: usize = 1000;

/// `?wait=`: whether a write answers when done (the default) or at once with a task id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParam {
    pub wait: Option<bool>,
}

/// Where a task stands.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TaskState {
    Processing,
    Succeeded { result: Value },
    Failed { error: Value },
}

/// The tasks of this process.
#[derive(Default)]
pub struct Tasks {
    next: AtomicU64,
    all: Mutex<BTreeMap<u64, (&'static str, TaskState)>>,
}

impl Tasks {
    /// Runs `work` now when `wait`; else starts it as task `kind` and answers 202 with its id.
    pub async fn run_or_start(
        self: &Arc<Self>,
        wait: bool,
        kind: &'static str,
        work: impl Future<Output = Result<Json<Value>, ApiError>> + Send + 'static,
    ) -> Result<Response, ApiError> {
        if wait {
            return work.await.map(IntoResponse::into_response);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.set(id, kind, TaskState::Processing);
        let tasks = self.clone();
        tokio::spawn(async move {
            let state = match work.await {
                Ok(Json(result)) => TaskState::Succeeded { result },
                Err(e) => TaskState::Failed { error: e.body()["error"].clone() },
            };
            tasks.set(id, kind, state);
        });
        let body = json!({ "task_id": id, "kind": kind, "status": "processing" });
        Ok((StatusCode::ACCEPTED, Json(body)).into_response())
    }

    fn set(&self, id: u64, kind: &'static str, state: TaskState) {
        let Ok(mut all) = self.all.lock() else { return };
        all.insert(id, (kind, state));
        let done: Vec<u64> = all
            .iter()
            .filter(|(_, (_, s))| !matches!(s, TaskState::Processing))
            .map(|(id, _)| *id)
            .collect();
        for old in done.iter().take(done.len().saturating_sub(KEEP_FINISHED)) {
            all.remove(old);
        }
    }

    /// The task's JSON (`task_id`, `kind`, `status`, and `result` or `error`), if known.
    pub fn get(&self, id: u64) -> Option<Value> {
        let all = self.all.lock().ok()?;
        let (kind, state) = all.get(&id)?;
        let mut v = serde_json::to_value(state).ok()?;
        v["task_id"] = json!(id);
        v["kind"] = json!(kind);
        Some(v)
    }
}
