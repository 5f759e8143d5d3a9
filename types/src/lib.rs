//! What the lakeload worker and the operator both need, and nothing else: the run summary a
//! worker writes (with its mode and counts), the `EtlRunResult` resource through which it
//! reports that summary to the operator, and where a table lives. The operator depends on this
//! crate instead of the worker's data stack.

pub mod location;
pub mod result;
pub mod summary;

pub use summary::Mode;
