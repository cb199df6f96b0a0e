//! How a kernel call runs: which SIMD level and on how many threads.
//!
//! Work is split with rayon only above [`MIN_PARALLEL_ELEMS`], where the cost of waking a
//! thread is small against the work and one core no longer has the bandwidth to itself. Each
//! thread count gets one rayon pool, built on first use and kept for the life of the process.

use crate::simd::Level;
use rayon::ThreadPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Below this many input elements (4 MiB of floats) a kernel runs on the calling thread: on the
/// 2-core benchmark machine, maps that fit in the L3 cache are read as fast by one core as by
/// two, and waking a second thread only adds its latency (see docs/benchmarks.md).
pub const MIN_PARALLEL_ELEMS: usize = 1 << 20;

/// The SIMD level and thread count of a kernel call.
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    pub level: Level,
    pub threads: usize,
}

impl Exec {
    /// `threads = None` means every core.
    pub fn new(level: Level, threads: Option<usize>) -> Exec {
        Exec { level, threads: threads.unwrap_or_else(all_cores).max(1) }
    }

    /// One thread at the active SIMD level.
    pub fn single() -> Exec {
        Exec { level: Level::active(), threads: 1 }
    }

    /// The same level on one thread (for work inside an already parallel loop).
    pub fn serial(self) -> Exec {
        Exec { threads: 1, ..self }
    }

    /// Whether work over `elems` elements should be split across threads.
    pub fn splits(self, elems: usize) -> bool {
        self.threads > 1 && elems >= MIN_PARALLEL_ELEMS
    }

    /// Runs `f` inside this call's thread pool (directly when single-threaded), so rayon's
    /// `join` and parallel iterators inside it use `threads` threads.
    pub fn run<R: Send>(self, f: impl FnOnce() -> R + Send) -> R {
        match (self.threads > 1).then(|| pool(self.threads)).flatten() {
            Some(pool) => pool.install(f),
            // One thread asked for, or the OS refused to start threads: run here.
            None => f(),
        }
    }

    /// Runs `f(item, exec)` for every item: in parallel over the items when there are at least
    /// as many as threads and the work (`elems_per_item` each) is large enough, each item then
    /// single-threaded; otherwise in order, each item free to split its own work.
    pub fn for_each<T: Send>(self, items: Vec<T>, elems_per_item: usize, f: impl Fn(T, Exec) + Sync + Send) {
        use rayon::prelude::*;
        if items.len() >= self.threads && self.splits(items.len() * elems_per_item) {
            let serial = self.serial();
            items.into_par_iter().for_each(|item| f(item, serial));
        } else {
            items.into_iter().for_each(|item| f(item, self));
        }
    }
}

/// The number of cores this process may use.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn pool(threads: usize) -> Option<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pools.get(&threads) {
        return Some(pool.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("keras-attn-{i}"))
        .build()
        .ok()?;
    Some(pools.entry(threads).or_insert(Arc::new(pool)).clone())
}
