//! What the lakeload worker and the operator both need, and nothing else: the run summary a
//! worker writes (with its mode and counts), the `EtlRunResult` resource through which it
//! reports that summary to the operator, and where a table lives. The operator depends on this
//! crate instead of the worker's data stack.

pub mod location;
pub mod result;
pub mod summary;

pub use summary::Mode;

/// The share of a container's memory limit a worker takes as its budget (`run.memory_limit`),
/// as numerator and denominator: the rest covers what the budget does not count (binary,
/// runtime, I/O buffers), so the worker's peak stays inside the container. One rule for both
/// places that apply it: the operator, from a Job's `resources.limits.memory`, and the worker's
/// `auto`, from its cgroup.
pub const CONTAINER_MEMORY_SHARE: (u64, u64) = (3, 4);
