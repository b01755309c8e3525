//! Log lines written by a thread of their own, off the requests' path: a
//! request appends its formatted line to a shared buffer (a copy under a
//! lock; only the first line after a write wakes the thread), and the thread
//! writes whatever has gathered [`WRITE_EVERY`] after that first line
//! (sooner once [`WRITE_AT_BYTES`] have gathered) in one `write`. Waking the thread for each line cost a futex
//! call and a context switch per request (docs/benchmarks/history.md). Never lossy: past
//! [`QUEUED_BYTES`] a logging request waits for the thread. Used where an
//! instance is not frozen right after its response (FC, local); Lambda
//! writes each line before answering.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait for the thread (a killed process loses at most this).
pub const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Gathered bytes that make the thread write before its next tick.
const WRITE_AT_BYTES: usize = 128 * 1024;
/// Gathered bytes past which a logging request waits for the thread.
const QUEUED_BYTES: usize = 1024 * 1024;

/// The process's log writer, once [`spawn`]ed for stderr by `init_tracing`.
static STDERR_QUEUE: std::sync::OnceLock<QueuedWriter> = std::sync::OnceLock::new();

/// Writes one whole line to stderr: through the log-writer thread where
/// there is one (FC, local), else directly, in one write, before returning
/// (Lambda: a frozen instance must not hold lines of a finished request).
pub fn write_stderr_line(line: &[u8]) {
    match STDERR_QUEUE.get() {
        Some(queue) => queue.push(line),
        None => {
            let _ = std::io::stderr().lock().write_all(line);
        }
    }
}

/// Makes `writer` the one [`write_stderr_line`] uses.
pub fn route_stderr_lines_to(writer: &QueuedWriter) {
    let _ = STDERR_QUEUE.set(writer.clone());
}

#[derive(Default)]
struct Queue {
    gathered: Mutex<Gathered>,
    /// The thread waits on it for its next tick, or for a full buffer.
    to_write: Condvar,
    /// Requests wait on it while the buffer is over [`QUEUED_BYTES`].
    written: Condvar,
}

#[derive(Default)]
struct Gathered {
    bytes: Vec<u8>,
    /// The thread was asked to write before its tick (asked once).
    woken: bool,
    stop: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Gathered> {
        self.gathered.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The requests' end of the queue (a `MakeWriter` for tracing-subscriber).
#[derive(Clone)]
pub struct QueuedWriter {
    queue: Arc<Queue>,
}

impl QueuedWriter {
    fn push(&self, line: &[u8]) {
        let mut gathered = self.queue.lock();
        while gathered.bytes.len() >= QUEUED_BYTES && !gathered.stop {
            gathered = self
                .queue
                .written
                .wait(gathered)
                .unwrap_or_else(|p| p.into_inner());
        }
        let first = gathered.bytes.is_empty();
        gathered.bytes.extend_from_slice(line);
        if first {
            // The thread may be idle: it gathers for a tick from now.
            self.queue.to_write.notify_one();
        } else if gathered.bytes.len() >= WRITE_AT_BYTES && !gathered.woken {
            gathered.woken = true;
            self.queue.to_write.notify_one();
        }
    }
}

/// Writes what is still gathered, then stops the thread (at the end of `start`).
pub struct Flush {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that writes to `out`.
pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<(QueuedWriter, Flush)> {
    let queue = Arc::new(Queue::default());
    let thread = {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_gathered(&queue, out))?
    };
    Ok((
        QueuedWriter {
            queue: Arc::clone(&queue),
        },
        Flush {
            queue,
            thread: Some(thread),
        },
    ))
}

fn write_gathered(queue: &Queue, mut out: impl Write) {
    let mut taken = Vec::new();
    loop {
        let stop = {
            let mut gathered = queue.lock();
            // Idle: asleep until a line comes (no ticks without lines).
            while gathered.bytes.is_empty() && !gathered.stop {
                gathered = queue
                    .to_write
                    .wait(gathered)
                    .unwrap_or_else(|p| p.into_inner());
            }
            // Then a tick of gathering, unless the buffer fills first.
            if !gathered.woken && !gathered.stop {
                gathered = queue
                    .to_write
                    .wait_timeout(gathered, WRITE_EVERY)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            std::mem::swap(&mut gathered.bytes, &mut taken);
            gathered.woken = false;
            gathered.stop
        };
        if !taken.is_empty() {
            queue.written.notify_all();
            let _ = out.write_all(&taken);
            let _ = out.flush();
            taken.clear();
            // A burst's buffer is not kept: the usual tick needs far less.
            taken.shrink_to(WRITE_AT_BYTES);
        }
        if stop && queue.lock().bytes.is_empty() {
            return;
        }
    }
}

impl Write for QueuedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedWriter {
    type Writer = QueuedWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.queue.lock().stop = true;
        self.queue.to_write.notify_one();
        self.queue.written.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_flush_returns() {
        let sink = Sink::default();
        let (writer, flush) = spawn(sink.clone()).unwrap();
        for i in 0..1000 {
            writer
                .clone()
                .write_all(format!("{i}\n").as_bytes())
                .unwrap();
        }
        drop(flush);
        let expected: String = (0..1000).map(|i| format!("{i}\n")).collect();
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
            expected
        );
    }

    #[test]
    fn a_line_is_written_a_tick_later_without_a_flush() {
        let sink = Sink::default();
        let (writer, _flush) = spawn(sink.clone()).unwrap();
        for line in ["first\n", "second\n"] {
            writer.clone().write_all(line.as_bytes()).unwrap();
            let started = std::time::Instant::now();
            while !String::from_utf8_lossy(&sink.0.lock().unwrap()).contains(line) {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{line} never written"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn more_than_the_queue_holds_waits_and_loses_nothing() {
        let sink = Sink::default();
        let (writer, flush) = spawn(sink.clone()).unwrap();
        let line = format!("{}\n", "x".repeat(999));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (mut writer, line) = (writer.clone(), line.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        writer.write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flush);
        let written = sink.0.lock().unwrap();
        assert_eq!(written.len(), 4 * 1000 * line.len());
        assert!(
            written
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l.len() == 999)
        );
    }
}
