//! Read & clean: each source file inflated and parsed line by line ([`reader`], [`row`]);
//! its first lines watched for a setting that is certainly wrong ([`diagnose`]); bad lines
//! kept with their reason ([`rejects`]); [`progress`] shown as files are read.

pub mod diagnose;
pub mod progress;
pub mod reader;
pub mod rejects;
pub mod row;
