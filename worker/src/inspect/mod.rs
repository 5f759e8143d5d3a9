//! Read-only views of a table, none taking its lock: [`status`] (last runs, files, dates,
//! lock holder), [`history`] (a Delta table's versions) and [`preview`] (`lakeload plan`:
//! what a run would do).

pub mod history;
pub mod preview;
pub mod status;
