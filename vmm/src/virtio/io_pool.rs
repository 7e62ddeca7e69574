//! A small pool of I/O threads for a device queue.
//!
//! The queue's owner (its worker thread) hands jobs to the pool with
//! [`IoPool::submit`]; a handful of threads take them in order, run them
//! and send back what each produced. The owner learns about results
//! through an eventfd it polls ([`IoPool::completion_fd`]) and collects
//! all that are ready at once ([`IoPool::completions`]), so it can return
//! several to the guest with one interrupt.
//!
//! Dropping the pool abandons the jobs no thread has started yet and
//! waits for the running ones to finish: once the drop returns, no pool
//! thread exists any more, so none can touch what the jobs pointed at.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

/// Jobs waiting for a thread, and whether the pool is closing.
struct Pending<J> {
    jobs: VecDeque<J>,
    closed: bool,
    /// Threads waiting for a job.
    idle: usize,
}

/// What the owner and the pool threads share.
struct Shared<J> {
    pending: Mutex<Pending<J>>,
    /// Signalled when a job is queued or the pool closes.
    wake: Condvar,
    /// Becomes readable when results wait to be collected.
    done: EventFd,
    /// Set by the first result after the owner last collected, so that a
    /// burst of results writes the eventfd once.
    signalled: AtomicBool,
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, Pending<J>> {
        // A panic in a pool thread never happens while the lock is held
        // (jobs run outside it), so a poisoned lock still holds a
        // consistent queue.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool of threads running jobs of type `J`, each producing a `C`.
pub struct IoPool<J, C> {
    shared: Arc<Shared<J>>,
    results: Receiver<C>,
    threads: Vec<JoinHandle<()>>,
}

impl<J, C> std::fmt::Debug for IoPool<J, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl<J: Send + 'static, C: Send + 'static> IoPool<J, C> {
    /// Starts `threads` threads named `name` (at least one), each running
    /// `run` on the jobs it takes.
    pub fn new<F>(name: &str, threads: usize, run: F) -> io::Result<IoPool<J, C>>
    where
        F: Fn(J) -> C + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                jobs: VecDeque::new(),
                closed: false,
                idle: 0,
            }),
            wake: Condvar::new(),
            done: EventFd::new(libc::EFD_NONBLOCK)?,
            signalled: AtomicBool::new(false),
        });
        let (tx, results) = mpsc::channel();
        let run = Arc::new(run);
        let mut pool = IoPool {
            shared,
            results,
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let shared = pool.shared.clone();
            let tx = tx.clone();
            let run = run.clone();
            // On an error, dropping `pool` stops the threads started so far.
            let t = crate::thread(format!("{name}-io{i}"))
                .spawn(move || serve(&shared, &tx, run.as_ref()))?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Queues `jobs`; they start in order as threads become free. Wakes
    /// one idle thread per job, no more: a busy thread takes the next job
    /// without sleeping, and a thread woken for nothing would cost a
    /// context switch.
    pub fn submit(&self, jobs: impl IntoIterator<Item = J>) {
        let mut p = self.shared.lock();
        let before = p.jobs.len();
        p.jobs.extend(jobs);
        let wake = (p.jobs.len() - before).min(p.idle);
        drop(p);
        for _ in 0..wake {
            self.shared.wake.notify_one();
        }
    }

    /// The eventfd that becomes readable when results are ready.
    pub fn completion_fd(&self) -> RawFd {
        self.shared.done.as_raw_fd()
    }

    /// Every result ready now (resets the eventfd first, so a result that
    /// arrives while these are handled makes it readable again).
    pub fn completions(&self) -> mpsc::TryIter<'_, C> {
        let _ = self.shared.done.read();
        // Acquire: pairs with the release in `serve`, so every result sent
        // before a thread saw the flag set is visible to `try_iter`.
        self.shared.signalled.swap(false, Ordering::AcqRel);
        self.results.try_iter()
    }

    /// Waits up to `timeout_ms` for the eventfd (for callers not polling
    /// it themselves, such as tests); true if results are ready.
    #[cfg(test)]
    pub fn wait(&self, timeout_ms: i32) -> bool {
        use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
        let Ok(epoll) = Epoll::new() else {
            return false;
        };
        let ev = EpollEvent::new(EventSet::IN, 0);
        if epoll
            .ctl(ControlOperation::Add, self.completion_fd(), ev)
            .is_err()
        {
            return false;
        }
        let mut events = [EpollEvent::default()];
        matches!(epoll.wait(timeout_ms, &mut events), Ok(n) if n > 0)
    }
}

/// A pool thread: takes jobs until the pool closes.
fn serve<J, C>(shared: &Shared<J>, tx: &Sender<C>, run: &(dyn Fn(J) -> C + Send + Sync)) {
    loop {
        let job = {
            let mut p = shared.lock();
            loop {
                if p.closed {
                    return;
                }
                if let Some(j) = p.jobs.pop_front() {
                    break j;
                }
                p.idle += 1;
                p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                p.idle -= 1;
            }
        };
        let result = run(job);
        if tx.send(result).is_err() {
            return; // the owner is gone
        }
        // Release: the result sent above is visible to an owner that
        // acquires the flag (see `completions`).
        if !shared.signalled.swap(true, Ordering::AcqRel) {
            let _ = shared.done.write(1);
        }
    }
}

impl<J, C> Drop for IoPool<J, C> {
    fn drop(&mut self) {
        {
            let mut p = self.shared.lock();
            p.closed = true;
            // Abandoned: never started, never will be.
            p.jobs.clear();
        }
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn collect<J: Send + 'static, C: Send + 'static>(pool: &IoPool<J, C>, n: usize) -> Vec<C> {
        let mut out = Vec::new();
        while out.len() < n {
            assert!(pool.wait(5000), "results did not come");
            out.extend(pool.completions());
        }
        out
    }

    #[test]
    fn every_job_runs_once_and_its_result_comes_back() {
        let pool = IoPool::new("t", 4, |x: u32| x * 2).unwrap();
        pool.submit(0..100);
        let mut got = collect(&pool, 100);
        got.sort_unstable();
        assert_eq!(got, (0..100).map(|x| x * 2).collect::<Vec<_>>());
        // Nothing more, and the eventfd is quiet once collected.
        assert_eq!(pool.completions().count(), 0);
        assert!(!pool.wait(0));
    }

    #[test]
    fn drop_abandons_queued_jobs_and_waits_for_running_ones() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        let (g, r) = (gate.clone(), ran.clone());
        let pool = IoPool::new("t", 2, move |_: u32| {
            let (m, c) = &*g;
            let mut open = m.lock().unwrap();
            while !*open {
                open = c.wait(open).unwrap();
            }
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        pool.submit(0..10);
        // Both threads are inside a job (queue down to 8).
        while pool.shared.lock().jobs.len() > 8 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let dropper = std::thread::spawn(move || drop(pool));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!dropper.is_finished(), "drop waits for running jobs");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        dropper.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2, "queued jobs were abandoned");
        // The run closure (and its captures) went with the threads.
        assert_eq!(Arc::strong_count(&ran), 1);
    }
}
