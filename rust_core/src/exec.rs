//! How a kernel call runs: which SIMD level and on how many threads.
//!
//! A call with more than one thread runs on the calling thread with a [`Team`] of workers (see
//! `team.rs` for why not rayon): [`Exec::run`] opens the team's region for the whole call, and
//! each pass of the call shares out its parts with [`Exec::map`]. Work is split only above
//! [`MIN_PARALLEL_ELEMS`], where a pass is long against the ~1 µs it costs to share it out.

use crate::simd::Level;
use crate::team::Team;
use std::sync::Mutex;

/// Passes over fewer input elements (64 KiB of floats) run on the calling thread alone.
pub const MIN_PARALLEL_ELEMS: usize = 1 << 14;

/// A block's channel pooling, its first pass, is shared out only for maps of at least this many
/// bytes. The pass reads its map once at the speed of the cache, so below that it takes less
/// time than the other threads need to start working inside a network (measured on
/// CBAM-ResNet-50 in LiteRT at 2 threads: see docs/benchmarks.md); the workers, woken when the
/// call begins, are ready for the passes after it.
pub const MIN_PARALLEL_POOL_BYTES: usize = 2 << 20;

/// The SIMD level and thread count of a kernel call.
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    pub level: Level,
    pub threads: usize,
    /// The workers spin a while after the call, ready for the next (see [`Team::region`]):
    /// for calls from Python, made in loops; not inside LiteRT, whose own threads need the
    /// cores between our ops.
    pub linger: bool,
}

impl Exec {
    /// `threads = None` means every core.
    pub fn new(level: Level, threads: Option<usize>) -> Exec {
        Exec { level, threads: threads.unwrap_or_else(all_cores).max(1), linger: false }
    }

    /// One thread at the active SIMD level.
    pub fn single() -> Exec {
        Exec { level: Level::active(), threads: 1, linger: false }
    }

    /// The same call with lingering workers (see [`Exec::linger`]).
    pub fn lingering(self) -> Exec {
        Exec { linger: true, ..self }
    }

    /// The same level on one thread (for work inside an already parallel loop).
    pub fn serial(self) -> Exec {
        Exec { threads: 1, ..self }
    }

    /// This call for a block's channel pooling over a map of `bytes` bytes (see
    /// [`MIN_PARALLEL_POOL_BYTES`]): on this thread alone below that size.
    pub fn for_pooling(self, bytes: usize) -> Exec {
        if bytes >= MIN_PARALLEL_POOL_BYTES {
            self
        } else {
            self.serial()
        }
    }

    /// Whether work over `elems` elements should be split across threads.
    pub fn splits(self, elems: usize) -> bool {
        self.threads > 1 && elems >= MIN_PARALLEL_ELEMS
    }

    fn team(self) -> Option<&'static Team> {
        (self.threads > 1).then(|| Team::get(self.threads)).flatten()
    }

    /// Runs `f` on this thread with this call's team ready, so that the passes inside it
    /// ([`Exec::map`]) share their parts without waking the workers each time.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self.team() {
            Some(team) => team.region(self.linger, f),
            None => f(),
        }
    }

    /// `f(part)` for every part, results in order: shared among the threads (this one
    /// included) when there are several threads and parts, in order on this thread otherwise.
    pub fn map<T: Send, R: Send>(self, parts: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
        let team = match self.team() {
            Some(team) if parts.len() > 1 => team,
            _ => return parts.into_iter().map(f).collect(),
        };
        let slots: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
        let results: Vec<Mutex<Option<R>>> = slots.iter().map(|_| Mutex::new(None)).collect();
        let chunk = |i: usize| {
            let part = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each part runs once");
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(f(part));
        };
        team.region(self.linger, || team.run(slots.len(), &chunk));
        results.into_iter().map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every part ran")).collect()
    }

    /// Runs `f(item, exec)` for every item: in parallel over the items when there are at least
    /// as many as threads and the work (`elems_per_item` each) is large enough, each item then
    /// single-threaded; otherwise in order, each item free to split its own work.
    pub fn for_each<T: Send>(self, items: Vec<T>, elems_per_item: usize, f: impl Fn(T, Exec) + Sync + Send) {
        if items.len() >= self.threads && self.splits(items.len() * elems_per_item) {
            let serial = self.serial();
            self.map(items, |item| f(item, serial));
        } else {
            items.into_iter().for_each(|item| f(item, self));
        }
    }
}

/// The number of cores this process may use.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
