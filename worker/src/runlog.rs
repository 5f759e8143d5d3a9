//! Logging: `tracing` to stderr (text or JSON) and, in full, to a scratch file that the run
//! uploads to `_lakeload/logs/<run_id>.log` when it ends (also when it fails).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

static CAPTURE: OnceLock<LogCapture> = OnceLock::new();

/// The active progress bar, if any: log lines printed to stderr go around it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

pub fn set_progress_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().expect("progress bar slot") = bar;
}

/// Where the run's log is being captured.
#[derive(Clone)]
pub struct LogCapture {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl LogCapture {
    /// Everything logged so far.
    pub fn contents(&self) -> Vec<u8> {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.flush();
        }
        std::fs::read(&self.path).unwrap_or_default()
    }
}

/// The capture set up by [`init`], if any (library users may log their own way).
pub fn capture() -> Option<&'static LogCapture> {
    CAPTURE.get()
}

struct FileWriter(Arc<Mutex<std::fs::File>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log file poisoned"))?
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().map(|b| b.clone()).unwrap_or(None);
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[derive(Clone)]
struct MakeFile(Arc<Mutex<std::fs::File>>);

impl<'a> MakeWriter<'a> for MakeFile {
    type Writer = FileWriter;
    fn make_writer(&'a self) -> FileWriter {
        FileWriter(self.0.clone())
    }
}

/// Installs the global subscriber. `RUST_LOG`, if set, replaces the level filter.
pub fn init(format: LogFormat, level: &str) {
    let filter = |level: &str| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("warn,lakeload={level}")))
    };
    // The uploaded log is the full one: per-file detail is logged at debug.
    let file_level = if level == "trace" { "trace" } else { "debug" };
    let capture = tempfile::Builder::new()
        .prefix("lakeload-log-")
        .tempfile()
        .ok()
        .and_then(|f| f.keep().ok())
        .map(|(file, path)| LogCapture {
            path,
            file: Arc::new(Mutex::new(file)),
        });

    let stderr_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| StderrWriter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(|| StderrWriter)
            .boxed(),
    };
    let file_layer = capture.as_ref().map(|c| {
        let make = MakeFile(c.file.clone());
        match format {
            LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(make).boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(make)
                .boxed(),
        }
    });
    let _ = tracing_subscriber::registry()
        .with(stderr_layer.with_filter(filter(level)))
        .with(file_layer.map(|l| l.with_filter(filter(file_level))))
        .try_init();
    if let Some(c) = capture {
        let _ = CAPTURE.set(c);
    }
}

/// Removes the scratch file at exit.
pub fn cleanup() {
    if let Some(c) = CAPTURE.get() {
        let _ = std::fs::remove_file(&c.path);
    }
}
