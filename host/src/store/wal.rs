//! Durability of SQLite commits outside the writer's path.
//!
//! With `synchronous=FULL`, SQLite syncs the WAL inside every `COMMIT`, so the one write
//! connection waits for the disk and no other group of writes can start meanwhile. Instead, the
//! write connection runs with `synchronous=NORMAL` (its commits write the WAL but do not sync
//! it; checkpoints still sync the WAL before copying it and the database after) and a
//! [`Syncer`] thread syncs the WAL before anyone is told that their write is done. So every
//! acknowledged write is on disk, exactly as with `FULL`, while the writer already runs the
//! next group. One sync covers every commit made before it began: commits that queue behind a
//! slow sync share the next one.
//!
//! The difference from `FULL`: for the time of one sync (about 0.3 ms) a commit is visible to
//! other connections before it is durable. A reader may see a record that a power cut in that
//! window takes back, together with everything committed after it (the WAL is replayed in
//! order, so nothing that depended on it survives it). InnoDB's group commit behaves the same.
//!
//! The [`Flusher`] starts the kernel's writeback of the database file while a checkpoint copies
//! the WAL into it, so that the checkpoint's final sync does not flush megabytes at once in front
//! of the writer's WAL syncs (PostgreSQL's `checkpoint_flush_after` does the same).

use std::fs::File;
use std::path::PathBuf;
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

/// Told how a sync went: `Err` carries the reason a write may not be durable.
pub(crate) type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Syncs the WAL of a SQLite database on a thread of its own, then answers everyone who waited
/// for a commit made before the sync began.
#[derive(Debug, Clone)]
pub struct Syncer {
    waiting: mpsc::Sender<Vec<Answer>>,
    /// Syncs that succeeded so far (tests check the wiring with it).
    #[cfg(test)]
    synced: Arc<AtomicU64>,
}

impl Syncer {
    /// Starts the thread that syncs `wal`, the database's `-wal` file.
    pub(crate) fn start(wal: PathBuf) -> std::io::Result<Self> {
        Self::start_with(move |file: &mut WalFile| file.sync(&wal))
    }

    /// [`Syncer::start`] with the sync given: tests count or fail them.
    fn start_with(
        mut sync: impl FnMut(&mut WalFile) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (waiting, requests) = mpsc::channel::<Vec<Answer>>();
        #[cfg(test)]
        let synced = Arc::new(AtomicU64::new(0));
        #[cfg(test)]
        let counted = synced.clone();
        thread::Builder::new()
            .name("rapport-wal-sync".into())
            .spawn(move || {
                let mut file = WalFile::default();
                while let Ok(mut answers) = requests.recv() {
                    // Everyone queued by now committed before this sync begins: one sync for all.
                    while let Ok(more) = requests.try_recv() {
                        answers.extend(more);
                    }
                    let result = sync(&mut file).map_err(|error| {
                        tracing::error!(%error, "syncing the WAL failed");
                        format!("syncing the WAL failed: {error}")
                    });
                    #[cfg(test)]
                    if result.is_ok() {
                        counted.fetch_add(1, Ordering::Release);
                    }
                    for answer in answers {
                        answer(result.clone());
                    }
                }
            })?;
        Ok(Self {
            waiting,
            #[cfg(test)]
            synced,
        })
    }

    /// How many syncs have succeeded.
    #[cfg(test)]
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Answers `answers` once a sync that began after this call has ended; call it after the
    /// commit. If the thread has gone, they are told at once that the write may not be durable.
    pub(crate) fn after_sync(&self, answers: Vec<Answer>) {
        if let Err(mpsc::SendError(answers)) = self.waiting.send(answers) {
            for answer in answers {
                answer(Err("the WAL's sync thread has stopped".into()));
            }
        }
    }

    /// Waits until a sync that began after this call has ended.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        let (done, synced) = tokio::sync::oneshot::channel();
        self.after_sync(vec![Box::new(move |result| {
            let _ = done.send(result);
        })]);
        synced
            .await
            .unwrap_or_else(|_| Err("the WAL's sync thread has stopped".into()))
    }
}

/// The syncer's handle on the `-wal` file, opened on first need.
#[derive(Default)]
struct WalFile {
    file: Option<(File, (u64, u64))>,
}

impl WalFile {
    /// Syncs the file at `path` (`fsync`, as SQLite does). SQLite deletes the file only when its
    /// last connection closes, after copying all of it into the database; a file found under
    /// the name is then a new one, and the handle is opened again. The handle is otherwise kept
    /// open, so that an error of the kernel's writeback is reported to the next sync.
    fn sync(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let named = std::fs::metadata(path)?;
        let identity = (named.dev(), named.ino());
        match &self.file {
            Some((_, held)) if *held == identity => {}
            _ => self.file = Some((File::open(path)?, identity)),
        }
        let (file, _) = self.file.as_ref().expect("opened above");
        file.sync_all()
    }
}

/// Starts the kernel's writeback of the database file every [`FLUSH_EVERY`] while at least one
/// checkpoint runs (see the module's docs). Idle, its thread sleeps.
#[derive(Debug, Clone)]
pub(crate) struct Flusher {
    state: Arc<FlusherState>,
}

#[derive(Debug)]
struct FlusherState {
    running: AtomicUsize,
    thread: thread::Thread,
}

/// How often a running checkpoint's writes are handed to the disk.
const FLUSH_EVERY: Duration = Duration::from_millis(2);

impl Flusher {
    /// Starts the thread that flushes `database`, the main database file.
    pub(crate) fn start(database: PathBuf) -> std::io::Result<Self> {
        let file = File::open(database)?;
        let (state, registered) = mpsc::sync_channel::<Weak<FlusherState>>(1);
        let thread = thread::Builder::new()
            .name("rapport-db-flush".into())
            .spawn(move || {
                let Ok(state) = registered.recv() else { return };
                // Ends once the last `Flusher` is gone (its state's drop wakes this thread).
                while let Some(running) = state.upgrade().map(|s| s.running.load(Ordering::Acquire))
                {
                    if running == 0 {
                        thread::park();
                    } else {
                        start_writeback(&file);
                        thread::sleep(FLUSH_EVERY);
                    }
                }
            })?;
        let shared = Arc::new(FlusherState {
            running: AtomicUsize::new(0),
            thread: thread.thread().clone(),
        });
        state
            .send(Arc::downgrade(&shared))
            .expect("the thread waits for its state");
        Ok(Self { state: shared })
    }

    /// Flushes until the guard is dropped: hold it for the time of a checkpoint.
    pub(crate) fn during_checkpoint(&self) -> FlushGuard<'_> {
        if self.state.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.state.thread.unpark();
        }
        FlushGuard(self)
    }
}

impl Drop for FlusherState {
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

/// See [`Flusher::during_checkpoint`].
pub(crate) struct FlushGuard<'f>(&'f Flusher);

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        self.0.state.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Asks the kernel to start writing the file's dirty pages to disk, without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). It promises nothing about durability, which the
/// checkpoint's own sync provides; it only spreads that sync's work over the checkpoint.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `file`, open for the whole call; the call reads no
    // memory of this process.
    let done =
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if done != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range failed");
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syncer whose syncs count themselves, fail if told to, and each wait for a token sent
    /// on the returned sender before they begin.
    fn counting(fail: bool) -> (Syncer, Arc<AtomicU64>, mpsc::Sender<()>) {
        let count = Arc::new(AtomicU64::new(0));
        let (release, tokens) = mpsc::channel::<()>();
        let counted = count.clone();
        let syncer = Syncer::start_with(move |_| {
            tokens.recv().expect("the test holds the sender");
            counted.fetch_add(1, Ordering::SeqCst);
            if fail {
                Err(std::io::Error::other("disk on fire"))
            } else {
                Ok(())
            }
        })
        .unwrap();
        (syncer, count, release)
    }

    fn wait(syncer: &Syncer) -> tokio::task::JoinHandle<Result<(), String>> {
        let syncer = syncer.clone();
        tokio::spawn(async move { syncer.sync().await })
    }

    #[tokio::test]
    async fn an_answer_comes_only_after_a_sync_that_began_after_the_call() {
        let (syncer, count, release) = counting(false);
        let waiting = wait(&syncer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "answered before any sync ended");
        assert_eq!(count.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(syncer.synced(), 1);
    }

    #[tokio::test]
    async fn callers_queued_behind_a_slow_sync_share_the_next_one() {
        let (syncer, count, release) = counting(false);
        // The first sync has begun and waits; twenty callers queue behind it.
        let first = wait(&syncer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..20).map(|_| wait(&syncer)).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            queued.iter().all(|one| !one.is_finished()),
            "a caller queued during a sync was answered by it"
        );
        release.send(()).unwrap();
        for one in queued {
            one.await.unwrap().unwrap();
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "one sync for the first, one for the rest"
        );
    }

    #[tokio::test]
    async fn a_failed_sync_tells_every_waiting_caller_why() {
        let (syncer, _, release) = counting(true);
        release.send(()).unwrap();
        let error = syncer.sync().await.unwrap_err();
        assert_eq!(error, "syncing the WAL failed: disk on fire");
        assert_eq!(syncer.synced(), 0);
    }

    /// A directory of its own under the system's temporary directory, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("rapport-wal-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_wal_file_is_opened_again_when_a_new_one_replaces_it() {
        let dir = TempDir::new();
        let path = dir.0.join("db-wal");
        let mut file = WalFile::default();
        assert!(file.sync(&path).is_err(), "no file yet");
        std::fs::write(&path, b"one").unwrap();
        file.sync(&path).unwrap();
        let first = file.file.as_ref().unwrap().1;
        file.sync(&path).unwrap();
        assert_eq!(file.file.as_ref().unwrap().1, first, "kept open");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"two").unwrap();
        file.sync(&path).unwrap();
        assert_ne!(
            file.file.as_ref().unwrap().1,
            first,
            "the new file is synced"
        );
    }

    #[test]
    fn the_flusher_counts_running_checkpoints_and_its_thread_ends_with_it() {
        let dir = TempDir::new();
        let path = dir.0.join("db");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let flusher = Flusher::start(path).unwrap();
        {
            let _one = flusher.during_checkpoint();
            let _two = flusher.during_checkpoint();
            assert_eq!(flusher.state.running.load(Ordering::SeqCst), 2);
            thread::sleep(FLUSH_EVERY * 3);
        }
        assert_eq!(flusher.state.running.load(Ordering::SeqCst), 0);
        let state = Arc::downgrade(&flusher.state);
        drop(flusher);
        for _ in 0..300 {
            if state.strong_count() == 0 {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the flusher's thread did not end");
    }
}
