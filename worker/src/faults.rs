//! A test hook for fault-injection tests: `LAKELOAD_TEST_PAUSE_AT=<point>:<n>[:<action>]` acts
//! the n-th time the worker reaches `<point>`, after saying so on stderr. Actions:
//! - none: wait forever, so the test can SIGKILL the worker exactly there;
//! - `stop`: stop the whole process (SIGSTOP), as a paused VM or a long GC pause would, until
//!   the test sends SIGCONT: nothing runs meanwhile, lease renewal included;
//! - `sleep<ms>`: sleep that long, with everything else (lease renewal) still running;
//! - `grow-once`: allocate and touch memory until the kernel's OOM killer ends the process (a
//!   container over its memory limit), only the first time any attempt of the table's runs gets
//!   there: a marker object created-if-absent under `_lakeload/test-faults/` in the table's
//!   storage says so, so the pod Kubernetes starts again with the same arguments goes on. At a
//!   point that has no storage at hand, it grows every time.
//!
//! Without the variable, `pause_point` does nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const ENV: &str = "LAKELOAD_TEST_PAUSE_AT";

/// What a test waits for on stderr.
pub const MARKER: &str = "lakeload-test-paused-at";

#[derive(Debug, Clone, PartialEq)]
enum Action {
    Wait,
    Stop,
    Sleep(std::time::Duration),
    GrowOnce,
}

static TARGET: OnceLock<Option<(String, u64, Action)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn parse(value: &str) -> (String, u64, Action) {
    let mut parts = value.split(':');
    let point = parts.next().unwrap_or_default().to_string();
    let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let action = match parts.next() {
        Some("stop") => Action::Stop,
        Some("grow-once") => Action::GrowOnce,
        Some(a) if a.starts_with("sleep") => a["sleep".len()..]
            .parse()
            .map(|ms| Action::Sleep(std::time::Duration::from_millis(ms)))
            .unwrap_or(Action::Wait),
        _ => Action::Wait,
    };
    (point, n, action)
}

fn target() -> &'static Option<(String, u64, Action)> {
    TARGET.get_or_init(|| std::env::var(ENV).ok().map(|v| parse(&v)))
}

/// Points: `before_date_write`, `date_write_checked` (lease checked, PUT not yet sent),
/// `after_date_write`, `before_delete`, `before_state_commit`,
/// `multipart_part_uploaded`, `after_read`.
pub async fn pause_point(point: &str) {
    act(
        point,
        None::<fn(String, bytes::Bytes) -> std::future::Ready<bool>>,
    )
    .await
}

/// [`pause_point`] at a point where the table's storage is at hand (for `grow-once`):
/// `create_if_absent(key, body)` creates the marker object unless it exists, and says
/// whether it did. Taking the write as a function keeps this hook below the storage layer
/// (whose S3 client has a pause point of its own).
pub async fn pause_point_in<F, Fut>(point: &str, create_if_absent: F)
where
    F: FnOnce(String, bytes::Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    act(point, Some(create_if_absent)).await
}

async fn act<F, Fut>(point: &str, create_if_absent: Option<F>)
where
    F: FnOnce(String, bytes::Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let Some((wanted, n, action)) = target() else {
        return;
    };
    if wanted != point || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    eprintln!("{MARKER} {point}:{n}");
    match action {
        Action::Wait => std::future::pending::<()>().await,
        Action::Stop => {
            // SAFETY: raise has no preconditions; SIGSTOP stops every thread of the process.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
        Action::Sleep(d) => tokio::time::sleep(*d).await,
        Action::GrowOnce => {
            if let Some(create_if_absent) = create_if_absent {
                let marker = format!("{}/test-faults/grown-{point}", crate::bookkeeping::META_DIR);
                // A body of this attempt's own: a store that finds the same bytes after a
                // refused retry takes the write as its own (see `storage`).
                let body = format!("{:?}", std::time::SystemTime::now());
                if !create_if_absent(marker.clone(), body.into()).await {
                    eprintln!("{MARKER} {point}:{n} grown before ({marker}): going on");
                    return;
                }
            }
            grow_until_killed().await
        }
    }
}

/// Takes memory 16 MiB at a time, writing every page so the kernel must back it, until the
/// process is killed.
async fn grow_until_killed() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 16 << 20];
        for page in chunk.iter_mut().step_by(4096) {
            *page = 1;
        }
        held.push(std::hint::black_box(chunk));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_point_count_and_action() {
        assert_eq!(
            parse("before_date_write"),
            ("before_date_write".into(), 1, Action::Wait)
        );
        assert_eq!(parse("after_read:2:stop"), ("after_read".into(), 2, Action::Stop));
        assert_eq!(
            parse("after_read:1:sleep2500"),
            (
                "after_read".into(),
                1,
                Action::Sleep(std::time::Duration::from_millis(2500))
            )
        );
        assert_eq!(
            parse("after_date_write:1:grow-once"),
            ("after_date_write".into(), 1, Action::GrowOnce)
        );
    }
}
