//! What the lakeload worker and the operator both need, and nothing else: the run summary a
//! worker reports (with its mode and counts) and where a table lives. The operator depends on
//! this crate instead of the worker's data stack.

pub mod location;
pub mod summary;

pub use summary::Mode;
