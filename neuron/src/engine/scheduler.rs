//! One generation thread per loaded model. Requests wait in a bounded queue; up to
//! `max_active` sequences run at once. Each engine step runs, as one batch, the next token of
//! every decoding sequence and prompt chunks of those still prefilling (oldest first, at most
//! `prefill_chunk` prompt tokens in all): a long prompt cannot starve a short one or stall the
//! streams, and where the model batches (cortex's CPU decoder) the rows share every weight read.
//! A request whose client went away (its event receiver dropped) is dropped at its next turn.
//!
//! Batching pays on the CPU since the kernels run several activation rows a pass (BENCHMARKS.md,
//! "Concurrent decode"); candle-transformers' models hold one sequence per instance and run the
//! batch's sequences one after another.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cortex_proto::generate::{ErrorKind, Event, FinishReason, GenerateError, SamplingParams, Timings, Usage};
use tokio::sync::mpsc::UnboundedSender;

use super::detok::{StopMatcher, TokenStream};
use super::grammar::{Constraint, Pick, Vocab};
use super::model::{ModelWeights, Sequence, StepInput};
use super::output::{token_logprob, Output};
use super::prefix::{PrefixCache, PrefixStats};
use super::sampler::Sampler;
use super::tokenizer::TextTokenizer;
use super::toolcall::Format;
use crate::metrics::ModelMetrics;

/// One choice of a tokenized request, ready for the generation thread.
pub struct Job {
    pub id: String,
    /// Which of the request's choices this is (its events carry it).
    pub choice: u32,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub params: SamplingParams,
    /// The grammar the output follows, if constrained.
    pub constraint: Option<Constraint>,
    /// The format to read tool calls in, if the request offers tools.
    pub calls: Option<Format>,
    /// Shared by the request's choices.
    pub events: UnboundedSender<Event>,
    pub enqueued: Instant,
    /// The client marked part of the prompt for caching: report the blocks it adds as writes.
    pub cache_control: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Sequences generating at once.
    pub max_active: usize,
    /// Requests allowed to wait beyond those; more get 429.
    pub queue_capacity: usize,
    /// Prompt tokens per engine step, over all the sequences prefilling in it.
    pub prefill_chunk: usize,
    /// Bytes of KV blocks the model's prefix cache may hold (0: none kept).
    pub prefix_cache_bytes: usize,
    /// A stream's text goes out at most this often (`output::Output`).
    pub stream_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_active: 8,
            queue_capacity: 64,
            prefill_chunk: 256,
            prefix_cache_bytes: 0,
            stream_interval: Duration::from_millis(DEFAULT_STREAM_INTERVAL_MS),
        }
    }
}

/// `SchedulerConfig::stream_interval`'s default: one frame of a 60 Hz display, so no reader
/// sees the difference; a fast model's tokens go two or three to an event (SmolLM2 on a 2-core
/// host makes one every ~6 ms), one slower than a frame's each alone.
pub const DEFAULT_STREAM_INTERVAL_MS: u64 = 16;

struct State {
    queue: VecDeque<Job>,
    active: usize,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// Handle to a model's generation thread. Dropping it lets queued and running requests finish,
/// then the thread exits.
pub struct Scheduler {
    shared: Arc<Shared>,
    config: SchedulerConfig,
    metrics: ModelMetrics,
    prefix: Arc<Mutex<PrefixCache>>,
}

struct Running {
    job: Job,
    seq: Sequence,
    sampler: Sampler,
    context: Vec<u32>,
    /// Prompt tokens already run through the model (or taken from the prefix cache).
    prefilled: usize,
    /// Prompt tokens the prefix cache supplied, and those its prompt added to it.
    cached: usize,
    cache_written: usize,
    generated: usize,
    detok: TokenStream,
    output: Output,
    first_token: Option<Instant>,
    prefill_done: Option<Instant>,
    started: Instant,
}

impl Running {
    /// The tokens this sequence's next step runs: `(true, range)` in the prompt (its next chunk,
    /// at most `chunk` tokens, empty when `chunk` is 0), or `(false, range)` in the context (the
    /// last token). Either way the range's start is the position of its first token.
    fn next_input(&self, chunk: usize) -> (bool, std::ops::Range<usize>) {
        let prompt_len = self.job.prompt.len();
        if self.prefilled < prompt_len {
            (true, self.prefilled..(self.prefilled + chunk).min(prompt_len))
        } else {
            let n = self.context.len();
            (false, n.saturating_sub(1)..n)
        }
    }
}

enum Step {
    Continue,
    Finished(FinishReason),
}

impl Scheduler {
    pub fn spawn(
        name: &str,
        weights: ModelWeights,
        tokenizer: TextTokenizer,
        vocab: Arc<Vocab>,
        mut config: SchedulerConfig,
        metrics: ModelMetrics,
    ) -> std::io::Result<Self> {
        if let Some(n) = weights.max_sequences() {
            config.max_active = config.max_active.min(n);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State { queue: VecDeque::new(), active: 0, closing: false }),
            wake: Condvar::new(),
        });
        let prefix = Arc::new(Mutex::new(PrefixCache::new(config.prefix_cache_bytes)));
        let worker = Worker {
            shared: shared.clone(),
            weights,
            tokenizer,
            vocab,
            config,
            metrics: metrics.clone(),
            prefix: prefix.clone(),
        };
        std::thread::Builder::new().name(format!("gen-{name}")).spawn(move || worker.run())?;
        Ok(Self { shared, config, metrics, prefix })
    }

    /// Queues a request's jobs (one per choice) together, or refuses them all when the queue
    /// is full.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), GenerateError> {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closing {
            return Err(GenerateError::new(ErrorKind::Unavailable, "the model is being unloaded"));
        }
        // A request with room for its first choice is taken whole: its other choices may
        // overfill the queue by n − 1 rather than never fitting a small one.
        let waiting_room = self.config.queue_capacity + self.config.max_active.saturating_sub(st.active);
        if st.queue.len() >= waiting_room {
            return Err(GenerateError::new(
                ErrorKind::Overloaded,
                format!("the queue for this model is full ({} waiting); retry shortly", st.queue.len()),
            ));
        }
        st.queue.extend(jobs);
        self.metrics.queue_depth.set(st.queue.len() as i64);
        drop(st);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// (running, queued) requests.
    pub fn load(&self) -> (usize, usize) {
        let st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.active, st.queue.len())
    }

    /// What the prefix cache holds and has done.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.prefix.lock().unwrap_or_else(|p| p.into_inner()).stats()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).closing = true;
        self.shared.wake.notify_all();
    }
}

struct Worker {
    shared: Arc<Shared>,
    weights: ModelWeights,
    tokenizer: TextTokenizer,
    vocab: Arc<Vocab>,
    config: SchedulerConfig,
    metrics: ModelMetrics,
    prefix: Arc<Mutex<PrefixCache>>,
}

impl Worker {
    fn run(self) {
        let mut running: Vec<Running> = Vec::new();
        let mut seed_counter: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        loop {
            // Admit waiting jobs, or sleep until there are some.
            let admitted: Vec<Job> = {
                let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                while running.is_empty() && st.queue.is_empty() && !st.closing {
                    st = self.shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if running.is_empty() && st.queue.is_empty() && st.closing {
                    return;
                }
                let room = self.config.max_active.saturating_sub(running.len());
                let n = room.min(st.queue.len());
                let jobs: Vec<Job> = st.queue.drain(..n).collect();
                st.active = running.len() + jobs.len();
                self.metrics.queue_depth.set(st.queue.len() as i64);
                self.metrics.in_flight.set(st.active as i64);
                jobs
            };
            for job in admitted {
                seed_counter = seed_counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
                match self.weights.new_sequence() {
                    Ok(mut seq) => {
                        let cached = self.restore(&mut seq, &job.prompt);
                        if job.choice == 0 {
                            let (prompt_tokens, cached_tokens) = (job.prompt.len() as u32, cached as u32);
                            let _ = job.events.send(Event::Started { prompt_tokens, cached_tokens });
                        }
                        running.push(Running {
                            sampler: Sampler::new(&job.params, seed_counter),
                            output: Output::new(
                                job.choice,
                                StopMatcher::new(job.params.stop.clone()),
                                job.calls,
                                self.config.stream_interval,
                            ),
                            context: job.prompt.clone(),
                            seq,
                            prefilled: cached,
                            cached,
                            cache_written: 0,
                            generated: 0,
                            detok: TokenStream::new(),
                            first_token: None,
                            prefill_done: None,
                            started: Instant::now(),
                            job,
                        });
                    }
                    Err(e) => {
                        let _ = job
                            .events
                            .send(Event::Error { error: GenerateError::new(ErrorKind::Internal, e.to_string()) });
                    }
                }
            }
            // Requests whose client went away stop here.
            running.retain(|r| {
                let gone = r.job.events.is_closed();
                if gone {
                    self.metrics.cancelled.inc();
                    tracing::info!(request = %r.job.id, generated = r.generated, "client went away; generation stopped");
                }
                !gone
            });
            // One batched step: every decoding sequence's next token, and prompt chunks of those
            // still prefilling, oldest first, up to `prefill_chunk` prompt tokens in all (so that a
            // step stays short for the decoding ones, and the oldest prompt is not held back
            // while every new one is prefilled beside it).
            let mut budget = self.config.prefill_chunk.max(1);
            let plans: Vec<Option<(bool, std::ops::Range<usize>)>> = running
                .iter()
                .map(|r| {
                    let (prompt, range) = r.next_input(budget);
                    if prompt {
                        budget -= range.len();
                    }
                    (!range.is_empty()).then_some((prompt, range))
                })
                .collect();
            // A step with prompt rows takes long: the text held back goes out before it.
            if plans.iter().flatten().any(|&(prompt, _)| prompt) {
                running.iter_mut().for_each(|r| r.output.flush(&r.job.events));
            }
            let logits = {
                let mut inputs: Vec<StepInput> = running
                    .iter_mut()
                    .zip(&plans)
                    .filter_map(|(r, plan)| {
                        let (prompt, range) = plan.clone()?;
                        let tokens = if prompt { &r.job.prompt[range.clone()] } else { &r.context[range.clone()] };
                        Some(StepInput { seq: &mut r.seq, tokens, pos: range.start })
                    })
                    .collect();
                if !inputs.is_empty() {
                    self.metrics.step_sequences.observe(inputs.len() as f64);
                }
                Sequence::forward_many(&mut inputs)
            };
            let mut results = logits.into_iter();
            let mut plans = plans.into_iter();
            running.retain_mut(|r| {
                let Some((prompt, range)) = plans.next().flatten() else { return true };
                let Some(logits) = results.next() else { return true };
                let prompt_end = prompt.then_some(range.end);
                match logits.and_then(|l| self.after(r, prompt_end, l)) {
                    Ok(Step::Continue) => true,
                    Ok(Step::Finished(finish)) => {
                        self.finish(r, finish);
                        false
                    }
                    Err(e) => {
                        tracing::error!(request = %r.job.id, error = %e, "generation failed");
                        r.output.flush(&r.job.events);
                        let _ = r.job.events.send(Event::Error {
                            error: GenerateError::new(ErrorKind::Internal, format!("generation failed: {e}")),
                        });
                        false
                    }
                }
            });
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.active = running.len();
            self.metrics.in_flight.set(st.active as i64);
        }
    }

    /// Starts `seq` from the longest prefix of `prompt` the prefix cache holds; returns the
    /// positions it supplied.
    fn restore(&self, seq: &mut Sequence, prompt: &[u32]) -> usize {
        let Some(kv) = seq.prefix_cache() else { return 0 };
        let restored = self.prefix.lock().unwrap_or_else(|p| p.into_inner()).restore(prompt);
        *kv = restored.cache;
        self.metrics.prefix_hit_tokens.inc_by(restored.tokens as u64);
        self.metrics.prefix_miss_tokens.inc_by((prompt.len() - restored.tokens) as u64);
        restored.tokens
    }

    /// Offers the full blocks of `seq`'s cache, whose positions hold `tokens`, to the prefix
    /// cache; returns the tokens of blocks it added.
    fn remember(&self, seq: &mut Sequence, tokens: &[u32]) -> usize {
        let Some(kv) = seq.prefix_cache() else { return 0 };
        let mut prefix = self.prefix.lock().unwrap_or_else(|p| p.into_inner());
        let evicted = prefix.counters().evictions;
        let added = prefix.insert(tokens, kv);
        let stats = prefix.counters();
        self.metrics.prefix_evictions.inc_by(stats.evictions - evicted);
        self.metrics.prefix_bytes.set(stats.bytes as i64);
        added
    }

    /// What a sequence's step produced: a prompt chunk (ending at `prompt_end`) moves it on,
    /// and once the prompt is all in, the last position's logits give the next token.
    fn after(&self, r: &mut Running, prompt_end: Option<usize>, logits: Vec<f32>) -> Result<Step, super::EngineError> {
        if let Some(end) = prompt_end {
            r.prefilled = end;
            if end < r.job.prompt.len() {
                return Ok(Step::Continue);
            }
            r.prefill_done = Some(Instant::now());
            r.cache_written = self.remember(&mut r.seq, &r.job.prompt);
        }
        // The raw distribution, kept only when the client asked for log-probabilities.
        let raw = r.job.params.logprobs.map(|top| (logits.clone(), top));
        let token = match r.job.constraint.as_mut() {
            None => r.sampler.choose(logits, &r.context)?,
            Some(c) => {
                let (sampler, context) = (&mut r.sampler, &r.context);
                let pick = c.pick(logits, |l| sampler.choose(l, context));
                self.metrics.grammar_seconds.inc_by(c.take_spent().as_secs_f64());
                match pick {
                    Ok(Pick::Token(t, masked)) => {
                        self.metrics.constrained_tokens.inc();
                        if masked {
                            self.metrics.grammar_masks.inc();
                        }
                        t
                    }
                    Ok(Pick::Complete) => return Ok(Step::Finished(FinishReason::Stop)),
                    Err(e) => return Err(super::EngineError::Grammar(e)),
                }
            }
        };
        r.sampler.accept(token);
        r.context.push(token);
        if r.first_token.is_none() {
            r.first_token = Some(Instant::now());
        }
        if self.tokenizer.eos.contains(&token) && !r.job.params.ignore_eos {
            return Ok(Step::Finished(FinishReason::Stop));
        }
        r.generated += 1;
        if let Some((logits, top)) = raw {
            r.output.logprob(token_logprob(&logits, token, top, &self.vocab));
        }
        if let Some(piece) = r.detok.push(&self.tokenizer, token)? {
            if let Some(stop) = r.output.push(&piece, &r.job.events) {
                return Ok(Step::Finished(FinishReason::StopSequence(stop)));
            }
        }
        if r.job.constraint.as_ref().is_some_and(Constraint::complete) {
            return Ok(Step::Finished(FinishReason::Stop));
        }
        if r.generated >= r.job.max_tokens || r.context.len() >= self.weights.context_len {
            return Ok(Step::Finished(FinishReason::Length));
        }
        Ok(Step::Continue)
    }

    fn finish(&self, r: &mut Running, finish: FinishReason) {
        // The answer's blocks too: an agent's next turn resends it. Then the sequence lets go
        // of its blocks before its client hears it is done.
        self.remember(&mut r.seq, &r.context);
        if let Some(kv) = r.seq.prefix_cache() {
            *kv = super::kv::KvCache::default();
        }
        let tail = match finish {
            FinishReason::StopSequence(_) => String::new(),
            _ => r.detok.finish(&self.tokenizer).unwrap_or_default(),
        };
        let finish = r.output.finish(&tail, finish, &r.job.events);
        let now = Instant::now();
        let first = r.first_token.unwrap_or(now);
        let prefill_end = r.prefill_done.unwrap_or(first);
        let decode_secs = now.duration_since(first).as_secs_f64();
        let prefill_secs = prefill_end.duration_since(r.started).as_secs_f64();
        let timings = Timings {
            ttft_ms: first.duration_since(r.job.enqueued).as_secs_f64() * 1e3,
            prefill_tok_s: if prefill_secs > 0.0 { (r.job.prompt.len() - r.cached) as f64 / prefill_secs } else { 0.0 },
            decode_tok_s: if decode_secs > 0.0 && r.generated > 1 {
                (r.generated - 1) as f64 / decode_secs
            } else {
                0.0
            },
            queue_ms: r.started.duration_since(r.job.enqueued).as_secs_f64() * 1e3,
        };
        let usage = Usage {
            prompt_tokens: r.job.prompt.len() as u32,
            completion_tokens: r.generated as u32,
            cached_tokens: r.cached as u32,
            cache_write_tokens: if r.job.cache_control { r.cache_written as u32 } else { 0 },
        };
        let _ = r.job.events.send(Event::Done { choice: r.job.choice, finish, usage, timings });
    }
}
