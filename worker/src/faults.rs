//! A test hook for crash-injection tests: with `LAKELOAD_TEST_PAUSE_AT=<point>:<n>` the worker
//! stops at the n-th time it reaches `<point>`, says so on stderr, and waits, so the test can
//! SIGKILL it exactly there. Without the variable, `pause_point` does nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const ENV: &str = "LAKELOAD_TEST_PAUSE_AT";

/// What a test waits for on stderr.
pub const MARKER: &str = "lakeload-test-paused-at";

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let value = std::env::var(ENV).ok()?;
        let (point, n) = value.rsplit_once(':').unwrap_or((&value, "1"));
        Some((point.to_string(), n.parse().unwrap_or(1)))
    })
}

/// Points: `before_date_write`, `after_date_write`, `before_delete`, `before_state_commit`.
pub async fn pause_point(point: &str) {
    let Some((wanted, n)) = target() else { return };
    if wanted != point || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    eprintln!("{MARKER} {point}:{n}");
    std::future::pending::<()>().await;
}
