//! Resident memory (VmRSS from `/proc/<pid>/status`) of running processes, sampled over a
//! run, to show that memory stays flat under load. VmRSS is what the OOM killer weighs,
//! and `/proc` needs no dependency.
//!
//! The leak bound is deliberately generous (the last sample within max(1.5x, +32 MB) of the
//! sample after warm-up): allocators keep freed memory, so only real growth should trip it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// VmRSS of `pid` in kB; `None` once the process is gone (or a zombie, which has none).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The largest RSS after warm-up that still counts as flat, in kB.
pub fn leak_bound_kb(warm_kb: u64) -> u64 {
    (warm_kb * 3 / 2).max(warm_kb + 32 * 1024)
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    /// How much of the run was done when the sample was taken (e.g. requests answered).
    pub progress: usize,
    pub kb: u64,
}

/// Every sample of one process.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub pid: u32,
    pub samples: Vec<Sample>,
    /// Set when the process is gone, so a reused pid is never sampled.
    pub ended: bool,
}

impl Series {
    pub fn first(&self) -> Option<Sample> {
        self.samples.first().copied()
    }

    pub fn middle(&self) -> Option<Sample> {
        self.samples.get(self.samples.len() / 2).copied()
    }

    pub fn last(&self) -> Option<Sample> {
        self.samples.last().copied()
    }

    /// The first sample taken once `warmup` more units of progress were done than at this
    /// process's first sample (a process started midway warms up from its own start).
    pub fn after_warmup(&self, warmup: usize) -> Option<Sample> {
        let start = self.first()?.progress;
        self.samples
            .iter()
            .find(|s| s.progress >= start + warmup)
            .copied()
    }

    /// Growth from the warm sample to the last, in kB per 1,000 units of progress: a
    /// store that keeps something per request shows up here long before the bound trips.
    pub fn growth_per_thousand(&self, warmup: usize) -> Option<f64> {
        let (warm, last) = (self.after_warmup(warmup)?, self.last()?);
        let done = last
            .progress
            .checked_sub(warm.progress)
            .filter(|d| *d > 0)?;
        Some((last.kb as f64 - warm.kb as f64) * 1000.0 / done as f64)
    }

    /// Whether the last sample is within [`leak_bound_kb`] of the warm one; `None` when
    /// the process did not live past its warm-up.
    pub fn flat(&self, warmup: usize) -> Option<bool> {
        let warm = self.after_warmup(warmup)?;
        Some(self.last()?.kb <= leak_bound_kb(warm.kb))
    }
}

/// Samples every tracked process on a thread of its own, every `interval`.
pub struct RssSampler {
    series: Arc<Mutex<Vec<Series>>>,
    progress: Arc<AtomicUsize>,
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling; `progress` is read into each sample.
    pub fn start(interval: Duration, progress: Arc<AtomicUsize>) -> RssSampler {
        let mut sampler = RssSampler {
            series: Arc::default(),
            progress,
            started: Instant::now(),
            stop: Arc::default(),
            thread: None,
        };
        let (series, progress, stop) = (
            Arc::clone(&sampler.series),
            Arc::clone(&sampler.progress),
            Arc::clone(&sampler.stop),
        );
        let started = sampler.started;
        sampler.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                sample_all(&series, &progress, started);
                std::thread::sleep(interval);
            }
        }));
        sampler
    }

    /// Adds a process, sampled at once and then with the others.
    pub fn track(&self, name: &str, pid: u32) {
        let mut series = self.series.lock().unwrap();
        series.push(Series {
            name: name.to_string(),
            pid,
            samples: vec![],
            ended: false,
        });
        drop(series);
        self.sample_now();
    }

    /// Samples every tracked process now (e.g. once at the very end).
    pub fn sample_now(&self) {
        sample_all(&self.series, &self.progress, self.started);
    }

    /// Stops sampling; returns every series, in the order they were tracked.
    pub fn finish(mut self) -> Vec<Series> {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.series.lock().unwrap().clone()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn sample_all(series: &Mutex<Vec<Series>>, progress: &AtomicUsize, started: Instant) {
    let progress = progress.load(Ordering::Acquire);
    let at = started.elapsed();
    for one in series.lock().unwrap().iter_mut().filter(|s| !s.ended) {
        match rss_kb(one.pid) {
            Some(kb) => one.samples.push(Sample { at, progress, kb }),
            None => one.ended = !one.samples.is_empty(),
        }
    }
}
