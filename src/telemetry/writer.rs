//! The log writer: lines are appended to a buffer where they are logged, and a thread writes the buffer out in
//! batches, so a request never waits on stderr and the process does not pay a thread switch and a system call
//! per line.
//!
//! Why not tracing-appender's `NonBlocking`: it hands each line to its writer thread through a channel, which
//! wakes the thread for every line. With the webhook pinned to one CPU, as a Deployment with a CPU limit of one
//! core or less runs it, that meant a thread switch and a `write` per review: `benches/load.sh` measured 44 µs of
//! CPU per review with the review's log line against 33 µs without it, although formatting the line costs about
//! 3 µs. Here the thread wakes once per batch: at the first line after it has written, then it waits up to
//! [`Settings::interval`] for more lines (or until [`Settings::wake_at`] bytes are buffered, or a WARN or ERROR
//! line arrives) and writes them all with one `write`.
//!
//! Nothing is dropped: past [`Settings::block_at`] buffered bytes, logging waits for the writer. Dropping the
//! [`WriterGuard`] writes out every line still buffered.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// When lines are written.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The longest a line waits, from the first line of a batch.
    pub interval: Duration,
    /// Buffered bytes that make the writer write at once.
    pub wake_at: usize,
    /// Buffered bytes past which logging waits for the writer.
    pub block_at: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_millis(50),
            wake_at: 64 * 1024,
            block_at: 1024 * 1024,
        }
    }
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// Write now: a WARN or ERROR line, or `wake_at` bytes.
    urgent: bool,
    /// The guard was dropped: write what is left and stop.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Where lines go: written by the writer thread, and by loggers themselves once it has stopped.
    out: Mutex<Box<dyn Write + Send>>,
    /// The writer thread waits on this for lines.
    lines: Condvar,
    /// Loggers past `block_at` wait on this for the writer to take the buffer.
    taken: Condvar,
    settings: Settings,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while appending leaves at worst a partial line: keep logging.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` of the subscriber: cheap to clone, every clone appends to the same buffer.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("settings", &self.shared.settings)
            .finish()
    }
}

/// Keeps the writer thread running; dropping it writes out every buffered line and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterGuard")
    }
}

impl BatchWriter {
    /// Starts the writer thread, writing to `out`. Falls back to writing from the logging thread itself when no
    /// thread can be started.
    pub fn new<W: Write + Send + 'static>(out: W, settings: Settings) -> (Self, WriterGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            out: Mutex::new(Box::new(out)),
            lines: Condvar::new(),
            taken: Condvar::new(),
            settings,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || run(&shared))
                .ok()
        };
        if thread.is_none() {
            // No writer: every line is urgent and written by whoever appends it (see LineWriter::write).
            shared.lock().closed = true;
        }
        (
            BatchWriter {
                shared: shared.clone(),
            },
            WriterGuard { shared, thread },
        )
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: sleeps until a line arrives, lets a batch gather for at most `interval`, writes it.
fn run(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buf.is_empty() && !state.closed {
            state = shared
                .lines
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !state.urgent && !state.closed {
            state = shared
                .lines
                .wait_timeout_while(state, shared.settings.interval, |s| !s.urgent && !s.closed)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut batch, &mut state.buf);
        state.urgent = false;
        let closed = state.closed;
        drop(state);
        shared.taken.notify_all();
        // A log that cannot be written has nowhere to say so: the lines are dropped, logging goes on.
        let mut out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        drop(out);
        batch.clear();
        // After a burst, give back what an ordinary batch does not need.
        batch.shrink_to(shared.settings.wake_at * 2);
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

/// One line's writer, made per event by the subscriber.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let settings = self.shared.settings;
        let mut state = self.shared.lock();
        if state.closed {
            // After the guard is gone (or without a writer thread), write directly, in order with what is left.
            let mut out = self
                .shared
                .out
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            out.write_all(&state.buf)?;
            state.buf.clear();
            out.write_all(line)?;
            out.flush()?;
            return Ok(line.len());
        }
        while state.buf.len() >= settings.block_at && !state.closed {
            state = self
                .shared
                .taken
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let first = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        let wake = self.urgent || state.buf.len() >= settings.wake_at;
        if wake {
            state.urgent = true;
        }
        drop(state);
        // The thread sleeps until the first line of a batch, then waits for the batch to fill or the interval to
        // pass; it is woken again only when the batch must go now.
        if first || wake {
            self.shared.lines.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            // WARN and ERROR are written at once: they are what an operator looks for after a failure.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    /// A sink the test can read, and optionally hold shut.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        hold: Arc<AtomicBool>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while self.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    fn log(writer: &BatchWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    /// Waits (at most a minute) for `cond`; the test fails on a hang, not on a slow machine.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn every_line_of_every_thread_is_written_once_and_in_its_threads_order() {
        let sink = Sink::default();
        // A small limit, so that loggers also wait for the writer on the way.
        let (writer, guard) = BatchWriter::new(
            sink.clone(),
            Settings {
                interval: Duration::from_millis(2),
                wake_at: 512,
                block_at: 2048,
            },
        );
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..5_000 {
                        log(&writer, &format!("thread {t} line {i}\n"));
                    }
                });
            }
        });
        drop(guard);
        let text = sink.text();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
        // Batched: far fewer writes than lines.
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 20_000, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn info_lines_wait_for_the_batch_and_a_warning_is_written_at_once() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::new(
            sink.clone(),
            Settings {
                // Long enough that only a wake-up can explain a line being written during the test.
                interval: Duration::from_secs(3600),
                ..Settings::default()
            },
        );
        log(&writer, "an info line\n");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sink.text(), "", "an info line is held for its batch");
        let warn = tracing::warn_span!("warning");
        let meta = warn.metadata().expect("a span's metadata, enabled or not");
        assert_eq!(*meta.level(), Level::WARN);
        writer
            .make_writer_for(meta)
            .write_all(b"a warning\n")
            .unwrap();
        eventually("the warning is written with the line before it", || {
            sink.text() == "an info line\na warning\n"
        });
        log(&writer, "a last line\n");
        drop(guard);
        assert_eq!(sink.text(), "an info line\na warning\na last line\n");
        // Once the writer has stopped, lines are written by the logger itself, to the same place.
        log(&writer, "after the guard\n");
        assert!(sink.text().ends_with("a last line\nafter the guard\n"));
    }

    #[test]
    fn a_full_buffer_makes_logging_wait_and_loses_nothing() {
        let sink = Sink::default();
        sink.hold.store(true, Ordering::SeqCst);
        let (writer, guard) = BatchWriter::new(
            sink.clone(),
            Settings {
                interval: Duration::from_millis(1),
                wake_at: 64,
                block_at: 128,
            },
        );
        let done = Arc::new(AtomicBool::new(false));
        let logger = {
            let (writer, done) = (writer.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..100 {
                    log(&writer, &format!("line {i:03} of a writer that is held\n"));
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        // The writer holds one batch; the buffer fills up to the limit, then the logger waits.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "logging went on past the limit"
        );
        sink.hold.store(false, Ordering::SeqCst);
        logger.join().unwrap();
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 100);
        assert!(
            text.lines()
                .enumerate()
                .all(|(i, l)| l.starts_with(&format!("line {i:03} ")))
        );
    }
}
