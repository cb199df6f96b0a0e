//! A team of worker threads that share out the chunks of one job with the calling thread.
//!
//! Why not rayon: a kernel call inside LiteRT lasts 10-300 µs and is followed by XNNPACK's own
//! threads. rayon's `install` hands the call to a pool thread and puts the caller to sleep (two
//! wake-ups per call), and its idle workers keep spinning after the call, on the core XNNPACK
//! needs next. Here the caller works too, chunks are taken from a shared counter (so a worker
//! that wakes late only takes fewer chunks), workers spin between the passes of one call (a
//! *region*, see [`Team::region`]) and park as soon as the region ends.
//!
//! One region at a time per team: a second thread that asks while one is open runs its work
//! alone on its own thread (correct, only not parallel).

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};

/// Chunks of one job at most (the counter's width).
pub const MAX_CHUNKS: usize = u16::MAX as usize;
/// Spins of an idle worker inside an open region before it parks anyway (about 50-100 µs), so a
/// caller that holds a region without work for long does not keep a core busy.
const REGION_SPINS: u32 = 1 << 15;
/// Spins of a caller waiting for the workers' last chunks before it yields its core.
const WAIT_SPINS: u32 = 1 << 12;

/// The job being shared out: `run(index)` for every index below the count in [`Team::state`].
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
}

struct Worker {
    thread: Thread,
    sleeping: Arc<AtomicBool>,
}

pub struct Team {
    /// Held for a region's duration.
    region: Mutex<()>,
    /// `epoch << 32 | next << 16 | count`: the current job's generation, its next chunk, its
    /// chunk count. One word, so that a worker claims a chunk of the job it read (compare and
    /// swap), never of a later job.
    state: AtomicU64,
    /// The current job (a `Job` on the caller's stack), valid while its chunks are unfinished.
    job: AtomicPtr<()>,
    done: AtomicUsize,
    panicked: AtomicBool,
    /// A region is open: idle workers spin instead of parking.
    open: AtomicBool,
    /// Idle workers keep spinning until this time ([`now_ns`]) after a lingering region
    /// closed (see [`Team::region`]).
    linger_until: AtomicU64,
    workers: Vec<Worker>,
}

thread_local! {
    /// The team whose region this thread holds, if any.
    static HELD: Cell<Option<&'static Team>> = const { Cell::new(None) };
}

/// How long idle workers keep spinning after a lingering region: enough to catch the next call
/// of a caller that calls in a loop, where waking a parked worker (tens of microseconds on a
/// virtual machine's idle core) would cost about as much as a small call.
const LINGER_NS: u64 = 200_000;

/// Nanoseconds since the first call (a monotonic clock).
fn now_ns() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

fn unpack(state: u64) -> (u64, usize, usize) {
    (state >> 32, ((state >> 16) & 0xffff) as usize, (state & 0xffff) as usize)
}

fn pack(epoch: u64, next: usize, count: usize) -> u64 {
    (epoch << 32) | ((next as u64) << 16) | count as u64
}

impl Team {
    /// The process-wide team for `threads` threads (the caller and `threads - 1` workers),
    /// started on first use; None when the OS refuses to start threads.
    pub fn get(threads: usize) -> Option<&'static Team> {
        static TEAMS: OnceLock<Mutex<HashMap<usize, Option<&'static Team>>>> = OnceLock::new();
        let mut teams = TEAMS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        *teams.entry(threads).or_insert_with(|| Team::start(threads))
    }

    fn start(threads: usize) -> Option<&'static Team> {
        let mut team = Box::new(Team {
            region: Mutex::new(()),
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            open: AtomicBool::new(false),
            linger_until: AtomicU64::new(0),
            workers: Vec::new(),
        });
        // The team lives for the rest of the process: workers hold it by reference.
        let address: &'static Team = unsafe {
            // SAFETY: the box is leaked just below and never freed or moved; the workers start
            // only after `workers` is filled in, through this shared reference.
            &*(&*team as *const Team)
        };
        let mut starting = Vec::new();
        for i in 1..threads {
            let sleeping = Arc::new(AtomicBool::new(false));
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
            let flag = sleeping.clone();
            let handle = thread::Builder::new()
                .name(format!("keras-attn-{i}"))
                .spawn(move || {
                    // Wait until the team is complete.
                    let _ = ready_rx.recv();
                    address.work(&flag);
                })
                .ok()?;
            starting.push(ready_tx);
            team.workers.push(Worker { thread: handle.thread().clone(), sleeping });
        }
        Box::leak(team);
        for ready in starting {
            let _ = ready.send(());
        }
        Some(address)
    }

    /// A worker's life: take chunks while there are any, spin while a region is open, else park.
    fn work(&'static self, sleeping: &AtomicBool) {
        let mut spins = 0u32;
        loop {
            if self.take_chunk() {
                spins = 0;
                continue;
            }
            if (self.open.load(Acquire) && spins < REGION_SPINS) || now_ns() < self.linger_until.load(Relaxed) {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            sleeping.store(true, SeqCst);
            // Re-check after announcing sleep: a caller publishes, then looks at `sleeping`.
            let (_, next, count) = unpack(self.state.load(SeqCst));
            if next < count || (self.open.load(SeqCst) && spins < REGION_SPINS) {
                sleeping.store(false, SeqCst);
                continue;
            }
            thread::park();
            sleeping.store(false, SeqCst);
            spins = 0;
        }
    }

    /// Claims and runs one chunk of the current job; false when there is none left.
    fn take_chunk(&self) -> bool {
        let mut state = self.state.load(Acquire);
        loop {
            let (epoch, next, count) = unpack(state);
            if next >= count {
                return false;
            }
            match self.state.compare_exchange_weak(state, pack(epoch, next + 1, count), AcqRel, Acquire) {
                Ok(_) => break self.run_chunk(next),
                Err(now) => state = now,
            }
        }
        true
    }

    fn run_chunk(&self, index: usize) {
        // SAFETY: this thread claimed chunk `index` of the current job, which is unfinished until
        // `done` counts it below, and the caller keeps the `Job` alive until every chunk is done.
        let job = unsafe { &*(self.job.load(Acquire) as *const Job) };
        if panic::catch_unwind(AssertUnwindSafe(|| (job.run)(index))).is_err() {
            self.panicked.store(true, Release);
        }
        self.done.fetch_add(1, Release);
    }

    fn wake(&self) {
        for worker in &self.workers {
            if worker.sleeping.swap(false, SeqCst) {
                worker.thread.unpark();
            }
        }
    }

    /// Runs `f` on this thread with the team's region held, so that [`run`] calls inside it use
    /// the workers; `f` alone, without the team, when another thread holds the region.
    /// `linger`: the workers keep spinning for a while after the region, ready for the next
    /// one, rather than park at once (which leaves their cores to other work, such as XNNPACK's
    /// threads after a fused op).
    pub fn region<R>(&'static self, linger: bool, f: impl FnOnce() -> R) -> R {
        if HELD.get().is_some() {
            return f();
        }
        let Ok(_guard) = self.region.try_lock() else {
            return f();
        };
        HELD.set(Some(self));
        self.open.store(true, SeqCst);
        self.wake();
        struct Close(&'static Team, bool);
        impl Drop for Close {
            fn drop(&mut self) {
                self.0.linger_until.store(if self.1 { now_ns() + LINGER_NS } else { 0 }, Relaxed);
                self.0.open.store(false, SeqCst);
                HELD.set(None);
            }
        }
        let _close = Close(self, linger);
        f()
    }

    /// `run(i)` for every `i < count`, shared out among this thread and the team's workers when
    /// this thread holds the team's region (see [`Team::region`]); on this thread alone otherwise.
    /// A panic in any chunk is raised here once every chunk has finished.
    pub fn run(&'static self, count: usize, run: &(dyn Fn(usize) + Sync)) {
        if count <= 1 || HELD.get().is_none_or(|held| !std::ptr::eq(held, self)) {
            return (0..count).for_each(run);
        }
        assert!(count <= MAX_CHUNKS, "a job has at most {MAX_CHUNKS} chunks, got {count}");
        let job = Job { run };
        let epoch = unpack(self.state.load(Acquire)).0.wrapping_add(1) & 0xffff_ffff;
        self.done.store(0, Relaxed);
        self.panicked.store(false, Relaxed);
        self.job.store(&job as *const Job as *mut (), Release);
        self.state.store(pack(epoch, 0, count), SeqCst);
        self.wake();
        while self.take_chunk() {}
        let mut spins = 0u32;
        while self.done.load(Acquire) < count {
            if spins < WAIT_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if self.panicked.load(Acquire) {
            panic!("a kernel panicked on a worker thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_inside_and_outside_a_region() {
        let team = Team::get(3).unwrap();
        for inside in [false, true] {
            let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
            let job = |i: usize| {
                counts[i].fetch_add(1, Relaxed);
            };
            let go = || {
                for _ in 0..50 {
                    team.run(counts.len(), &job);
                }
            };
            if inside {
                team.region(false, go);
            } else {
                go();
            }
            assert!(counts.iter().all(|c| c.load(Relaxed) == 50), "inside a region: {inside}");
        }
    }

    #[test]
    fn concurrent_regions_and_panics_are_safe() {
        let team = Team::get(2).unwrap();
        let total = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        team.region(false, || team.run(64, &|_| {
                            total.fetch_add(1, Relaxed);
                        }));
                    }
                });
            }
        });
        assert_eq!(total.load(Relaxed), 4 * 100 * 64);
        let caught = panic::catch_unwind(|| team.region(true, || team.run(8, &|i| assert!(i != 5, "chunk 5"))));
        assert!(caught.is_err());
        // The team still works after a panic.
        let after = AtomicUsize::new(0);
        team.region(false, || team.run(8, &|_| {
            after.fetch_add(1, Relaxed);
        }));
        assert_eq!(after.load(Relaxed), 8);
    }
}
