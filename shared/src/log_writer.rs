//! Log lines written by a thread of their own, off the requests' path: a
//! request hands its formatted line over (one allocation, no system call)
//! and the thread writes whatever is queued in one `write` (under load,
//! many lines per system call). Never lossy: a full queue makes the logging
//! request wait. Used where an instance is not frozen right after its
//! response (FC, local); Lambda writes each line before answering.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Lines that may wait for the thread before a logging request waits too.
const QUEUED_LINES: usize = 16_384;

/// The process's log writer, once [`spawn`]ed for stderr by `init_tracing`.
static STDERR_QUEUE: std::sync::OnceLock<QueuedWriter> = std::sync::OnceLock::new();

/// Writes one whole line to stderr: through the log-writer thread where
/// there is one (FC, local), else directly, in one write, before returning
/// (Lambda: a frozen instance must not hold lines of a finished request).
pub fn write_stderr_line(line: Vec<u8>) {
    match STDERR_QUEUE.get() {
        Some(queue) => {
            let _ = queue.lines.send(line);
        }
        None => {
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }
}

/// Makes `writer` the one [`write_stderr_line`] uses.
pub fn route_stderr_lines_to(writer: &QueuedWriter) {
    let _ = STDERR_QUEUE.set(writer.clone());
}

/// The requests' end of the queue (a `MakeWriter` for tracing-subscriber).
#[derive(Clone)]
pub struct QueuedWriter {
    lines: SyncSender<Vec<u8>>,
}

/// Writes what is still queued, then stops the thread (at the end of `start`).
pub struct Flush {
    lines: SyncSender<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that writes to `out`.
pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<(QueuedWriter, Flush)> {
    let (lines, queue) = sync_channel(QUEUED_LINES);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(queue, out))?;
    Ok((
        QueuedWriter {
            lines: lines.clone(),
        },
        Flush {
            lines,
            thread: Some(thread),
        },
    ))
}

/// An empty line is the stop signal (a formatted line is never empty).
fn write_lines(queue: Receiver<Vec<u8>>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = queue.recv() {
        let mut stop = line.is_empty();
        let _ = out.write_all(&line);
        while !stop && let Ok(more) = queue.try_recv() {
            stop = more.is_empty();
            let _ = out.write_all(&more);
        }
        let _ = out.flush();
        if stop {
            return;
        }
    }
}

impl Write for QueuedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if line.is_empty() {
            return Ok(0);
        }
        self.lines
            .send(line.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
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
        let _ = self.lines.send(Vec::new());
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
}
