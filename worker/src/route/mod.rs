//! Route rows by date: the [`router`] gathers the read rows by partition date and, past the
//! memory budget, compacts them or sends the largest dates to spill files cut by key hash
//! ([`crate::merge::spill`], which hands them to the merge). [`budget`] shares
//! `run.memory_limit` between reading, merging and encoding.

pub mod budget;
pub mod router;
