//! lakeload-operator: reconciles `EtlRun` resources by running lakeload worker Jobs, guarding
//! each table with a Lease, and writing the worker's summary back into the run's status.
//!
//! [`decide`] is the whole reconcile logic as a pure function; [`controller`] is its edge
//! (API calls); [`job`] builds the objects; [`crd`] defines the resource.

pub mod admit;
pub mod context;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod finished;
pub mod install;
pub mod job;
pub mod leader;
pub mod lease_clock;
pub mod metrics;
pub mod observe;
pub mod renew;
pub mod schedule;
pub mod shutdown;
