//! Dynamic batching (the text-embeddings-inference design): request handlers tokenize their
//! texts and put them on a bounded queue; one dedicated encoder thread (a plain `std::thread`,
//! so model forward passes never block the async runtime) takes the first waiting request, keeps
//! collecting more for up to `max_wait` or until `max_batch` texts are gathered, and encodes them
//! all in one padded forward pass. Under load the queue fills while a pass runs, so batches form
//! without any waiting; `max_wait` only trades a little latency at light load for larger batches.
//!
//! Admission is bounded: at most `queue_capacity` requests may wait (queued or gathered into the
//! forming batch) at once; beyond that [`Batcher::submit`] fails at once with
//! [`Error::Overloaded`], which the API turns into 429, instead of letting latency grow without
//! bound.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::encoder::{Embed, Encoder, EncoderFingerprint, Prepared, TextKind};
use crate::error::{Error, Result};

/// Batching limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Most texts per forward pass.
    pub max_batch: usize,
    /// How long the first request of a batch waits for company.
    pub max_wait: Duration,
    /// Most requests waiting at once.
    pub queue_capacity: usize,
}

impl BatchOptions {
    pub fn from_config(c: &crate::config::ServerConfig) -> Result<Self> {
        if c.max_batch == 0 || c.queue_capacity == 0 {
            return Err(Error::Config(
                "server.max_batch and server.queue_capacity must be > 0".into(),
            ));
        }
        Ok(BatchOptions {
            max_batch: c.max_batch,
            max_wait: Duration::from_millis(c.max_wait_ms),
            queue_capacity: c.queue_capacity,
        })
    }
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>>>;

/// One request's texts, already tokenized.
struct Job {
    items: Vec<Prepared>,
    reply: Reply,
}

/// Handle to the queue and its encoder thread.
pub struct Batcher {
    encoder: Arc<Encoder>,
    /// `None` once closed (shutdown): new work is refused, queued work still finishes.
    tx: Mutex<Option<SyncSender<Job>>>,
    /// Requests admitted and not yet in a running forward pass.
    depth: Arc<AtomicUsize>,
    capacity: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the encoder thread.
    pub fn start(encoder: Arc<Encoder>, opts: BatchOptions, metrics: Arc<Metrics>) -> Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(opts.queue_capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let worker =
            Worker { encoder: encoder.clone(), opts: opts.clone(), depth: depth.clone(), metrics };
        let thread = std::thread::Builder::new()
            .name("engine-encoder".into())
            .spawn(move || worker.run(rx))?;
        Ok(Batcher {
            encoder,
            tx: Mutex::new(Some(tx)),
            depth,
            capacity: opts.queue_capacity,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn encoder(&self) -> &Arc<Encoder> {
        &self.encoder
    }

    /// Requests waiting for the encoder right now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues tokenized texts; the receiver yields their vectors in order. Fails at once with
    /// [`Error::Overloaded`] when `queue_capacity` requests are already waiting.
    pub fn submit(&self, items: Vec<Prepared>) -> Result<oneshot::Receiver<Result<Vec<Vec<f32>>>>> {
        let (reply, rx) = oneshot::channel();
        if items.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(rx);
        }
        let overloaded = || {
            Error::Overloaded(format!(
                "the encoder queue is full ({} requests waiting); retry shortly",
                self.capacity
            ))
        };
        // Reserve a slot first so concurrent submitters cannot overshoot the capacity.
        if self.depth.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded());
        }
        let sender = self.tx.lock().ok().and_then(|g| g.clone());
        let Some(sender) = sender else {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded("the server is shutting down".into()));
        };
        match sender.try_send(Job { items, reply }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => overloaded(),
                    TrySendError::Disconnected(_) => {
                        Error::Overloaded("the encoder has stopped".into())
                    }
                })
            }
        }
    }

    /// Tokenizes and embeds `texts`, waiting on the current (async) task.
    pub async fn embed(&self, texts: Vec<String>, kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let encoder = self.encoder.clone();
        let items = tokio::task::spawn_blocking(move || {
            texts.iter().map(|t| encoder.prepare(t, kind)).collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::InvalidInput(format!("tokenizing failed: {e}")))??;
        self.embed_prepared(items).await
    }

    /// Embeds already tokenized texts, waiting on the current (async) task.
    pub async fn embed_prepared(&self, items: Vec<Prepared>) -> Result<Vec<Vec<f32>>> {
        let rx = self.submit(items)?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops accepting work; the encoder thread finishes what is queued, then exits.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn stopped() -> Error {
    Error::Overloaded("the encoder stopped before answering".into())
}

/// [`Embed`] through the queue, for blocking callers (the indexing pipeline run by
/// `POST /documents` on a blocking thread): passages share forward passes with queries and the
/// model is only ever driven by the encoder thread.
pub struct QueueEmbedder {
    pub batcher: Arc<Batcher>,
}

impl Embed for QueueEmbedder {
    fn dim(&self) -> usize {
        self.batcher.encoder.dim()
    }

    fn fingerprint(&self) -> EncoderFingerprint {
        self.batcher.encoder.fingerprint()
    }

    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        let items = texts
            .iter()
            .map(|t| self.batcher.encoder.prepare(t, kind))
            .collect::<Result<Vec<_>>>()?;
        let rx = self.batcher.submit(items)?;
        rx.blocking_recv().map_err(|_| stopped())?
    }

    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        self.batcher.encoder.token_spans(text)
    }
}

struct Worker {
    encoder: Arc<Encoder>,
    opts: BatchOptions,
    depth: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Job>) {
        // Ends when every sender is gone (Batcher::close) and the queue is drained.
        while let Ok(first) = rx.recv() {
            let mut texts = first.items.len();
            let mut jobs = vec![first];
            let deadline = Instant::now() + self.opts.max_wait;
            while texts < self.opts.max_batch {
                // Whatever is already queued joins without waiting.
                let next = match rx.try_recv() {
                    Ok(j) => Ok(j),
                    Err(_) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        rx.recv_timeout(deadline - now)
                    }
                };
                match next {
                    Ok(j) => {
                        texts += j.items.len();
                        jobs.push(j);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.depth.fetch_sub(jobs.len(), Ordering::AcqRel);
            self.encode(jobs);
        }
    }

    /// Encodes the gathered jobs (in passes of at most `max_batch` texts, longest first so
    /// similar lengths share a pass) and answers each job.
    fn encode(&self, jobs: Vec<Job>) {
        let mut refs: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| (0..job.items.len()).map(move |i| (j, i)))
            .collect();
        refs.sort_by_key(|&(j, i)| std::cmp::Reverse(jobs[j].items[i].ids.len()));
        let mut out: Vec<Vec<Option<Vec<f32>>>> =
            jobs.iter().map(|j| vec![None; j.items.len()]).collect();
        let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
        for chunk in refs.chunks(self.opts.max_batch.max(1)) {
            let group: Vec<&Prepared> = chunk.iter().map(|&(j, i)| &jobs[j].items[i]).collect();
            let started = Instant::now();
            // A panic inside candle must not kill the only encoder thread.
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| self.encoder.embed_batch(&group)))
                    .unwrap_or_else(|_| Err(Error::InvalidInput("the encoder panicked".into())));
            self.metrics.observe_batch(group.len(), started.elapsed());
            match result {
                Ok(vectors) if vectors.len() == chunk.len() => {
                    for (&(j, i), v) in chunk.iter().zip(vectors) {
                        out[j][i] = Some(v);
                    }
                }
                Ok(vectors) => {
                    let msg = format!(
                        "encoder returned {} vectors for {} texts",
                        vectors.len(),
                        chunk.len()
                    );
                    chunk.iter().for_each(|&(j, _)| failed[j] = Some(msg.clone()));
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = chunk.len(), "encoding failed");
                    chunk.iter().for_each(|&(j, _)| failed[j] = Some(e.to_string()));
                }
            }
        }
        for ((job, vectors), fail) in jobs.into_iter().zip(out).zip(failed) {
            let answer = match fail {
                Some(msg) => {
                    Err(Error::model(self.encoder.source(), format!("encoding failed: {msg}")))
                }
                None => vectors.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
                    Error::model(self.encoder.source(), "encoding left a text without a vector")
                }),
            };
            // The requester may have gone away (client disconnected): nothing to do then.
            let _ = job.reply.send(answer);
        }
    }
}
