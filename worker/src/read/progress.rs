//! Progress while files are read: a bar on a terminal (files, bytes, rows/s), periodic log
//! lines otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::read::reader::ReadProgress;

pub struct Progress {
    bar: Option<ProgressBar>,
    files_total: u64,
    files_done: AtomicU64,
    counters: Arc<ReadProgress>,
    started: Instant,
    ticker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    /// `interactive`: draw a bar (stderr is a terminal); else log a line every 10 seconds.
    pub fn start(files_total: u64, bytes_total: u64, interactive: bool) -> Arc<Progress> {
        let counters = Arc::new(ReadProgress::default());
        let bar = interactive.then(|| terminal_bar(bytes_total, "{bytes}/{total_bytes} {msg}"));
        let progress = Arc::new(Progress {
            bar,
            files_total,
            files_done: AtomicU64::new(0),
            counters,
            started: Instant::now(),
            ticker: std::sync::Mutex::new(None),
        });
        let ticking = progress.clone();
        let period = if interactive {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(10)
        };
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                ticking.tick();
            }
        });
        *progress.ticker.lock().expect("ticker slot") = Some(ticker);
        progress
    }

    pub fn counters(&self) -> Arc<ReadProgress> {
        self.counters.clone()
    }

    pub fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    fn message(&self) -> String {
        let lines = self.counters.lines.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "files {}/{} · rows {} · {:.0} rows/s",
            self.files_done.load(Ordering::Relaxed),
            self.files_total,
            lines,
            lines as f64 / secs
        )
    }

    fn tick(&self) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.counters.bytes.load(Ordering::Relaxed));
                bar.set_message(self.message());
            }
            None => tracing::info!("reading: {}", self.message()),
        }
    }

    pub fn finish(&self) {
        if let Some(t) = self.ticker.lock().expect("ticker slot").take() {
            t.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::runlog::set_progress_bar(None);
        }
    }
}

/// A bar counting finished items (e.g. dates written), on a terminal only; cleared when
/// dropped, also when the run stops early.
pub struct CountBar(ProgressBar);

impl CountBar {
    pub fn inc(&self) {
        self.0.inc(1);
    }
}

impl Drop for CountBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        crate::runlog::set_progress_bar(None);
    }
}

pub fn count_bar(total: u64, what: &str, interactive: bool) -> Option<CountBar> {
    if !interactive || total == 0 {
        return None;
    }
    Some(CountBar(terminal_bar(total, &format!("{{pos}}/{{len}} {what}"))))
}

/// A steadily ticking bar of `len` steps, `counter` drawn after the bar, that log lines to
/// stderr go around (see `runlog::set_progress_bar`).
fn terminal_bar(len: u64, counter: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {counter}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.enable_steady_tick(Duration::from_millis(200));
    crate::runlog::set_progress_bar(Some(bar.clone()));
    bar
}
