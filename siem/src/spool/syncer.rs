//! Background `fsync` for [`FsyncPolicy::EveryN`](super::FsyncPolicy).
//!
//! An `fdatasync` takes milliseconds (about 4 ms on the VM disk this was
//! measured on); doing one every 1000 records on the caller's thread would by
//! itself cap the spool near 200k records/s and stall an async runtime. The
//! caller hands the file to this thread and goes on. Requests for a file
//! already waiting are merged: one sync covers every write before it.

use std::fs::File;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::error::{IoContext, SpoolError};

pub(super) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<Target>,
    shutdown: bool,
    /// First failure, reported by the next [`Syncer::take_error`].
    error: Option<SpoolError>,
}

struct Target {
    path: PathBuf,
    file: Arc<File>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The worker holds the lock only around queue operations and cannot
        // panic there; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Syncer {
    pub(super) fn start() -> Result<Syncer, SpoolError> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("siem-spool-sync".into())
            .spawn(move || run(&worker))
            .at(Path::new("<spool sync thread>"))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for `file` (data, or a directory) to reach stable storage soon.
    pub(super) fn request(&self, path: &Path, file: &Arc<File>) {
        let mut state = self.shared.lock();
        if !state.queue.iter().any(|t| Arc::ptr_eq(&t.file, file)) {
            state.queue.push(Target {
                path: path.to_path_buf(),
                file: Arc::clone(file),
            });
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    pub(super) fn take_error(&self) -> Option<SpoolError> {
        self.shared.lock().error.take()
    }
}

fn run(shared: &Shared) {
    loop {
        let batch = {
            let mut state = shared.lock();
            while state.queue.is_empty() && !state.shutdown {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.queue.is_empty() {
                return;
            }
            mem::take(&mut state.queue)
        };
        for target in batch {
            // fsync on a directory is how Linux makes entries in it durable.
            if let Err(error) = target.file.sync_all().at(&target.path) {
                tracing::error!(%error, "spool fsync failed");
                shared.lock().error.get_or_insert(error);
            }
        }
    }
}

impl Drop for Syncer {
    /// Finishes the syncs already asked for, then stops the thread.
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("spool sync thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_is_reported_once() {
        // fsync of a pipe fails with EINVAL: a deterministic failure.
        let (reader, _writer) = std::io::pipe().expect("pipe");
        let pipe: File = std::os::fd::OwnedFd::from(reader).into();
        let path = PathBuf::from("/spool/00000000000000000000.seg");
        let syncer = Syncer::start().expect("start");

        syncer.request(&path, &Arc::new(pipe));
        let error = wait_for_error(&syncer);

        assert!(matches!(error, SpoolError::Io { path: p, .. } if p == path));
        assert!(syncer.take_error().is_none());
    }

    fn wait_for_error(syncer: &Syncer) -> SpoolError {
        for _ in 0..500 {
            if let Some(error) = syncer.take_error() {
                return error;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the sync of a pipe did not fail within 5 s");
    }
}
