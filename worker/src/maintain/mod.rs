//! Table maintenance, each a transaction through the same commit path as a run: [`optimize`]
//! (small files packed, deleted rows dropped), [`rollback`] (the table and its state back to a
//! version), [`vacuum`] (files no retained version needs deleted).

pub mod optimize;
pub mod rollback;
pub mod vacuum;
