//! Dynamic batching (the text-embeddings-inference design): request handlers tokenize their
//! texts and put them on a queue; one dedicated encoder thread (a plain `std::thread`, so model
//! forward passes never block the async runtime) gathers waiting texts into padded forward
//! passes of at most `max_batch` texts and `max_batch_tokens` tokens. Under load the queue fills
//! while a pass runs, so batches form without any waiting; `max_wait` only trades a little
//! latency at light load for larger batches.
//!
//! Cost, not count, decides who waits:
//! - Queries (the interactive lane) go into a pass before passages (the bulk lane, written
//!   documents and passage embeddings), and a large request is encoded a pass at a time, so a
//!   query waits for at most one pass however much bulk work is queued.
//! - Admission is by estimated wait: the tokens queued ahead of a request divided by the
//!   measured encoder throughput. Beyond `max_queue_seconds` (or `queue_capacity` requests)
//!   [`Batcher::submit`] fails at once with [`Error::Overloaded`] and a retry delay, which the
//!   API turns into 429 with `Retry-After`, instead of letting latency grow without bound.
//! - A request whose client went away (its reply receiver dropped) is skipped before its next
//!   pass, so abandoned work is never encoded.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::encoder::{Encoder, Prepared, TextKind};
use crate::error::{Error, Result};

/// Throughput assumed until the first forward pass has been timed (tokens per second; about
/// half of what 2 CPU cores reach, so early estimates err towards admitting less).
const INITIAL_TOKENS_PER_SECOND: f64 = 500.0;
/// Weight of the newest pass in the throughput estimate.
const THROUGHPUT_SMOOTHING: f64 = 0.2;

/// Batching and admission limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Most texts per forward pass.
    pub max_batch: usize,
    /// Most tokens per forward pass (a single longer text still gets a pass of its own).
    pub max_batch_tokens: usize,
    /// How long the first request of a batch waits for company.
    pub max_wait: Duration,
    /// Most requests waiting at once.
    pub queue_capacity: usize,
    /// Longest estimated wait a new request is admitted to.
    pub max_queue_seconds: f64,
}

impl BatchOptions {
    /// Reads and checks the `[server]` batching settings.
    pub fn from_config(c: &crate::config::ServerConfig) -> Result<Self> {
        if c.max_batch == 0 || c.queue_capacity == 0 || c.max_batch_tokens == 0 {
            return Err(Error::Config(
                "server.max_batch, server.max_batch_tokens and server.queue_capacity must be > 0"
                    .into(),
            ));
        }
        if c.max_queue_seconds.is_nan() || c.max_queue_seconds <= 0.0 {
            return Err(Error::Config("server.max_queue_seconds must be > 0".into()));
        }
        Ok(BatchOptions {
            max_batch: c.max_batch,
            max_batch_tokens: c.max_batch_tokens,
            max_wait: Duration::from_millis(c.max_wait_ms),
            queue_capacity: c.queue_capacity,
            max_queue_seconds: c.max_queue_seconds,
        })
    }
}

/// Which queue a request joins: queries are served before bulk passage work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Queries: short, and a user is waiting on each.
    Interactive,
    /// Passages (document writes, passage embeddings): long, throughput matters.
    Bulk,
}

impl From<TextKind> for Lane {
    fn from(kind: TextKind) -> Self {
        match kind {
            TextKind::Query => Lane::Interactive,
            TextKind::Passage => Lane::Bulk,
        }
    }
}

type Vectors = Result<Vec<Vec<f32>>>;
type Reply = oneshot::Sender<Vectors>;

/// One request's texts, already tokenized.
struct Job {
    items: Vec<Prepared>,
    lane: Lane,
    reply: Reply,
}

/// Work admitted and not yet encoded, shared by submitters and the encoder thread.
#[derive(Default)]
struct Load {
    /// Requests admitted and not finished.
    requests: AtomicUsize,
    /// Tokens not yet encoded, per lane.
    interactive_tokens: AtomicUsize,
    bulk_tokens: AtomicUsize,
    /// Measured encoder throughput (f64 bits, tokens per second); 0 until the first pass.
    tokens_per_second: AtomicU64,
}

impl Load {
    fn lane_tokens(&self, lane: Lane) -> &AtomicUsize {
        match lane {
            Lane::Interactive => &self.interactive_tokens,
            Lane::Bulk => &self.bulk_tokens,
        }
    }

    fn tokens_per_second(&self) -> f64 {
        match f64::from_bits(self.tokens_per_second.load(Ordering::Relaxed)) {
            t if t > 0.0 => t,
            _ => INITIAL_TOKENS_PER_SECOND,
        }
    }

    fn record_pass(&self, tokens: usize, took: Duration) {
        let secs = took.as_secs_f64();
        if tokens == 0 || secs <= 0.0 {
            return;
        }
        let now = tokens as f64 / secs;
        let old = f64::from_bits(self.tokens_per_second.load(Ordering::Relaxed));
        let new = if old > 0.0 { old + THROUGHPUT_SMOOTHING * (now - old) } else { now };
        self.tokens_per_second.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Seconds a new request of `lane` would wait before its first pass: every queued query
    /// goes first; bulk work also waits for all queued bulk work, while a query waits for at
    /// most one bulk pass of `pass_tokens`.
    fn estimated_wait(&self, lane: Lane, pass_tokens: usize) -> f64 {
        let interactive = self.interactive_tokens.load(Ordering::Relaxed);
        let bulk = self.bulk_tokens.load(Ordering::Relaxed);
        let ahead = match lane {
            Lane::Interactive => interactive + bulk.min(pass_tokens),
            Lane::Bulk => interactive + bulk,
        };
        ahead as f64 / self.tokens_per_second()
    }
}

/// Handle to the queue and its encoder thread.
pub struct Batcher {
    encoder: Arc<Encoder>,
    /// `None` once closed (shutdown): new work is refused, queued work still finishes.
    tx: Mutex<Option<Sender<Job>>>,
    load: Arc<Load>,
    opts: BatchOptions,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the encoder thread.
    pub fn start(encoder: Arc<Encoder>, opts: BatchOptions, metrics: Arc<Metrics>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let load = Arc::new(Load::default());
        let passes = encoder.clone();
        let worker = Worker {
            encode: Box::new(move |group| passes.embed_batch(group)),
            source: encoder.source().display().to_string(),
            opts: opts.clone(),
            load: load.clone(),
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("engine-encoder".into())
            .spawn(move || worker.run(rx))?;
        Ok(Batcher {
            encoder,
            tx: Mutex::new(Some(tx)),
            load,
            opts,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The encoder behind the queue (handlers tokenize with it).
    pub fn encoder(&self) -> &Arc<Encoder> {
        &self.encoder
    }

    /// Requests admitted and not yet answered.
    pub fn depth(&self) -> usize {
        self.load.requests.load(Ordering::Relaxed)
    }

    /// Most requests admitted at once.
    pub fn capacity(&self) -> usize {
        self.opts.queue_capacity
    }

    /// Queues tokenized texts; the receiver yields their vectors in order. Fails at once with
    /// [`Error::Overloaded`] when `queue_capacity` requests are already waiting or the
    /// estimated wait exceeds `max_queue_seconds` (an idle queue admits any request).
    pub fn submit(&self, items: Vec<Prepared>, lane: Lane) -> Result<oneshot::Receiver<Vectors>> {
        let (reply, rx) = oneshot::channel();
        if items.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(rx);
        }
        let tokens = items.iter().map(|p| p.ids.len()).sum::<usize>();
        // Reserve a slot first so concurrent submitters cannot overshoot the capacity.
        let before = self.load.requests.fetch_add(1, Ordering::AcqRel);
        let refuse = |message: String, wait: f64| {
            self.load.requests.fetch_sub(1, Ordering::AcqRel);
            Err(Error::Overloaded { message, retry_after_secs: wait.ceil().max(1.0) as u64 })
        };
        if before >= self.opts.queue_capacity {
            let wait = self.load.estimated_wait(Lane::Bulk, 0);
            return refuse(
                format!(
                    "the encoder queue is full ({} requests waiting); retry shortly",
                    self.opts.queue_capacity
                ),
                wait,
            );
        }
        let wait = self.load.estimated_wait(lane, self.opts.max_batch_tokens);
        if before > 0 && wait > self.opts.max_queue_seconds {
            return refuse(
                format!(
                    "the encoder has about {wait:.1} s of work queued (limit {} s, \
                     server.max_queue_seconds); retry shortly",
                    self.opts.max_queue_seconds
                ),
                wait,
            );
        }
        let sender = self.tx.lock().ok().and_then(|g| g.clone());
        let Some(sender) = sender else {
            return refuse("the server is shutting down".into(), 1.0);
        };
        self.load.lane_tokens(lane).fetch_add(tokens, Ordering::AcqRel);
        if sender.send(Job { items, lane, reply }).is_err() {
            self.load.lane_tokens(lane).fetch_sub(tokens, Ordering::AcqRel);
            return refuse("the encoder has stopped".into(), 1.0);
        }
        Ok(rx)
    }

    /// Embeds already tokenized texts of one kind, waiting on the current (async) task.
    pub async fn embed_prepared(&self, items: Vec<Prepared>, kind: TextKind) -> Vectors {
        let rx = self.submit(items, kind.into())?;
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
    Error::Overloaded {
        message: "the encoder stopped before answering".into(),
        retry_after_secs: 1,
    }
}

/// One forward pass over a group of prepared texts.
type EncodePass = Box<dyn Fn(&[&Prepared]) -> Vectors + Send>;

/// A job being encoded, a pass at a time.
struct Active {
    job: Job,
    /// Index of the first text not yet encoded.
    next: usize,
    vectors: Vec<Vec<f32>>,
}

impl Active {
    fn new(job: Job) -> Self {
        let n = job.items.len();
        Active { job, next: 0, vectors: Vec::with_capacity(n) }
    }

    fn done(&self) -> bool {
        self.next == self.job.items.len()
    }

    fn remaining_tokens(&self) -> usize {
        self.job.items[self.next..].iter().map(|p| p.ids.len()).sum()
    }
}

struct Worker {
    encode: EncodePass,
    /// Model path, for error messages.
    source: String,
    opts: BatchOptions,
    load: Arc<Load>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Job>) {
        let mut interactive: VecDeque<Active> = VecDeque::new();
        let mut bulk: VecDeque<Active> = VecDeque::new();
        let mut open = true;
        loop {
            if interactive.is_empty() && bulk.is_empty() {
                // Idle: block for the next request (ends once every sender is gone and the
                // queue is drained), then give it `max_wait` to gather company.
                let Ok(first) = rx.recv() else { return };
                self.admit(first, &mut interactive, &mut bulk);
                let deadline = Instant::now() + self.opts.max_wait;
                while queued_texts(&interactive, &bulk) < self.opts.max_batch {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(j) => self.admit(j, &mut interactive, &mut bulk),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            // Whatever arrived during the last pass joins without waiting.
            while open {
                match rx.try_recv() {
                    Ok(j) => self.admit(j, &mut interactive, &mut bulk),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            self.drop_abandoned(&mut interactive);
            self.drop_abandoned(&mut bulk);
            self.pass(&mut interactive, &mut bulk);
            if !open && interactive.is_empty() && bulk.is_empty() {
                return;
            }
        }
    }

    fn admit(&self, job: Job, interactive: &mut VecDeque<Active>, bulk: &mut VecDeque<Active>) {
        match job.lane {
            Lane::Interactive => interactive.push_back(Active::new(job)),
            Lane::Bulk => bulk.push_back(Active::new(job)),
        }
    }

    /// Removes jobs whose requester has gone (client disconnected): their texts are never
    /// encoded.
    fn drop_abandoned(&self, lane: &mut VecDeque<Active>) {
        lane.retain(|a| {
            if !a.job.reply.is_closed() {
                return true;
            }
            self.release(a.job.lane, a.remaining_tokens());
            self.load.requests.fetch_sub(1, Ordering::AcqRel);
            self.metrics.observe_abandoned();
            false
        });
    }

    fn release(&self, lane: Lane, tokens: usize) {
        self.load.lane_tokens(lane).fetch_sub(tokens, Ordering::AcqRel);
    }

    /// Runs one forward pass: texts from queries first, then bulk work, in arrival order, up to
    /// `max_batch` texts and `max_batch_tokens` tokens; answers every job it completes.
    fn pass(&self, interactive: &mut VecDeque<Active>, bulk: &mut VecDeque<Active>) {
        // (lane, job index, text index) of each text in the pass.
        let mut picked: Vec<(Lane, usize, usize)> = Vec::new();
        let mut tokens = 0;
        'fill: for (lane, jobs) in [(Lane::Interactive, &*interactive), (Lane::Bulk, &*bulk)] {
            for (j, a) in jobs.iter().enumerate() {
                for i in a.next..a.job.items.len() {
                    let t = a.job.items[i].ids.len();
                    let full = picked.len() >= self.opts.max_batch
                        || (!picked.is_empty() && tokens + t > self.opts.max_batch_tokens);
                    if full {
                        break 'fill;
                    }
                    picked.push((lane, j, i));
                    tokens += t;
                }
            }
        }
        if picked.is_empty() {
            return;
        }
        let lane_of = |lane| match lane {
            Lane::Interactive => &*interactive,
            Lane::Bulk => &*bulk,
        };
        let group: Vec<&Prepared> =
            picked.iter().map(|&(l, j, i)| &lane_of(l)[j].job.items[i]).collect();
        let started = Instant::now();
        // A panic inside candle must not kill the only encoder thread.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (self.encode)(&group)))
            .unwrap_or_else(|_| Err(Error::InvalidInput("the encoder panicked".into())));
        let took = started.elapsed();
        self.metrics.observe_batch(group.len(), took);
        self.load.record_pass(tokens, took);
        let result = match result {
            Ok(v) if v.len() == picked.len() => Ok(v),
            Ok(v) => {
                Err(format!("encoder returned {} vectors for {} texts", v.len(), picked.len()))
            }
            Err(e) => {
                tracing::error!(error = %e, batch = picked.len(), "encoding failed");
                Err(e.to_string())
            }
        };
        let mut failed: Vec<(Lane, usize)> = Vec::new();
        match result {
            Ok(vectors) => {
                for (&(lane, j, i), v) in picked.iter().zip(vectors) {
                    let a = match lane {
                        Lane::Interactive => &mut interactive[j],
                        Lane::Bulk => &mut bulk[j],
                    };
                    a.vectors.push(v);
                    a.next = i + 1;
                    self.release(lane, a.job.items[i].ids.len());
                }
            }
            Err(msg) => {
                for &(lane, j, _) in &picked {
                    if !failed.contains(&(lane, j)) {
                        failed.push((lane, j));
                    }
                }
                for &(lane, j) in failed.iter().rev() {
                    let a = match lane {
                        Lane::Interactive => interactive.remove(j),
                        Lane::Bulk => bulk.remove(j),
                    };
                    if let Some(a) = a {
                        self.release(lane, a.remaining_tokens());
                        self.answer(
                            a.job.reply,
                            Err(Error::model(&self.source, format!("encoding failed: {msg}"))),
                        );
                    }
                }
                return;
            }
        }
        for jobs in [interactive, bulk] {
            let mut k = 0;
            while k < jobs.len() {
                if jobs[k].done() {
                    if let Some(a) = jobs.remove(k) {
                        self.answer(a.job.reply, Ok(a.vectors));
                    }
                } else {
                    k += 1;
                }
            }
        }
    }

    fn answer(&self, reply: Reply, answer: Vectors) {
        self.load.requests.fetch_sub(1, Ordering::AcqRel);
        // The requester may have gone away (client disconnected): nothing to do then.
        let _ = reply.send(answer);
    }
}

fn queued_texts(interactive: &VecDeque<Active>, bulk: &VecDeque<Active>) -> usize {
    interactive.iter().chain(bulk).map(|a| a.job.items.len() - a.next).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(tokens: usize) -> Prepared {
        Prepared { ids: vec![1; tokens], pool: vec![tokens - 1], truncated: false }
    }

    fn options() -> BatchOptions {
        BatchOptions {
            max_batch: 4,
            max_batch_tokens: 64,
            max_wait: Duration::from_millis(0),
            queue_capacity: 100,
            max_queue_seconds: 1000.0,
        }
    }

    /// A worker whose passes report what they encode on entry (each text's vector is
    /// `[tokens]`) and then wait for the test's permission to finish.
    fn gated_worker(opts: BatchOptions) -> Gated {
        let (go_tx, go_rx) = mpsc::sync_channel::<()>(0);
        let (seen_tx, seen_rx) = mpsc::channel::<Vec<usize>>();
        let go_rx = Mutex::new(go_rx);
        let load = Arc::new(Load::default());
        let metrics = Arc::new(Metrics::default());
        let worker = Worker {
            encode: Box::new(move |group: &[&Prepared]| {
                let lens: Vec<usize> = group.iter().map(|p| p.ids.len()).collect();
                let _ = seen_tx.send(lens.clone());
                let _ = go_rx.lock().unwrap().recv();
                Ok(lens.iter().map(|&l| vec![l as f32]).collect())
            }),
            source: "test".into(),
            opts,
            load: load.clone(),
            metrics: metrics.clone(),
        };
        Gated { worker, load, metrics, go: go_tx, seen: seen_rx }
    }

    struct Gated {
        worker: Worker,
        load: Arc<Load>,
        metrics: Arc<Metrics>,
        /// Lets the pass in progress finish.
        go: mpsc::SyncSender<()>,
        /// The token counts of each pass, sent as it starts.
        seen: mpsc::Receiver<Vec<usize>>,
    }

    fn job(lens: &[usize], lane: Lane, load: &Load) -> (Job, oneshot::Receiver<Vectors>) {
        let (reply, rx) = oneshot::channel();
        let items: Vec<Prepared> = lens.iter().map(|&l| prepared(l)).collect();
        let tokens: usize = lens.iter().sum();
        load.requests.fetch_add(1, Ordering::AcqRel);
        load.lane_tokens(lane).fetch_add(tokens, Ordering::AcqRel);
        (Job { items, lane, reply }, rx)
    }

    #[test]
    fn queries_overtake_bulk_work_and_abandoned_jobs_are_never_encoded() {
        let Gated { worker, load, metrics, go, seen } = gated_worker(options());
        let (tx, rx) = mpsc::channel::<Job>();
        // Bulk: 12 passages of 10 tokens, 4 texts per pass.
        let (bulk, bulk_rx) = job(&[10; 12], Lane::Bulk, &load);
        tx.send(bulk).unwrap();
        let handle = std::thread::spawn(move || worker.run(rx));
        assert_eq!(seen.recv().unwrap(), vec![10; 4], "first bulk pass");
        // During that pass a query arrives, and a second query whose client disconnects.
        let (query, query_rx) = job(&[3], Lane::Interactive, &load);
        let (gone, gone_rx) = job(&[5], Lane::Interactive, &load);
        drop(gone_rx);
        tx.send(query).unwrap();
        tx.send(gone).unwrap();
        go.send(()).unwrap();
        assert_eq!(seen.recv().unwrap(), vec![3, 10, 10, 10], "the query leads the next pass");
        go.send(()).unwrap();
        assert_eq!(query_rx.blocking_recv().unwrap().unwrap(), vec![vec![3.0]]);
        assert_eq!(seen.recv().unwrap(), vec![10; 4]);
        go.send(()).unwrap();
        assert_eq!(seen.recv().unwrap(), vec![10]);
        go.send(()).unwrap();
        drop(tx);
        handle.join().unwrap();
        let vectors = bulk_rx.blocking_recv().unwrap().unwrap();
        assert_eq!(vectors.len(), 12);
        assert_eq!(metrics.abandoned(), 1);
        assert_eq!(load.requests.load(Ordering::Relaxed), 0);
        assert_eq!(load.interactive_tokens.load(Ordering::Relaxed), 0);
        assert_eq!(load.bulk_tokens.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn passes_respect_the_token_budget_but_a_long_text_still_runs() {
        let Gated { worker, load, go, seen, .. } = gated_worker(options());
        let (tx, rx) = mpsc::channel::<Job>();
        let (j, out) = job(&[40, 20, 30, 100, 5], Lane::Bulk, &load);
        tx.send(j).unwrap();
        drop(tx);
        let handle = std::thread::spawn(move || worker.run(rx));
        for expected in [vec![40, 20], vec![30], vec![100], vec![5]] {
            assert_eq!(seen.recv().unwrap(), expected);
            go.send(()).unwrap();
        }
        handle.join().unwrap();
        let v = out.blocking_recv().unwrap().unwrap();
        let want: Vec<Vec<f32>> = [40.0, 20.0, 30.0, 100.0, 5.0].iter().map(|&x| vec![x]).collect();
        assert_eq!(v, want, "input order kept");
    }

    #[test]
    fn wait_estimate_counts_queued_queries_and_at_most_one_bulk_pass_for_a_query() {
        let load = Load::default();
        load.record_pass(1000, Duration::from_secs(1));
        load.bulk_tokens.store(50_000, Ordering::Relaxed);
        load.interactive_tokens.store(500, Ordering::Relaxed);
        assert!((load.estimated_wait(Lane::Interactive, 2000) - 2.5).abs() < 1e-9);
        assert!((load.estimated_wait(Lane::Bulk, 2000) - 50.5).abs() < 1e-9);
    }
}
