//! The original job's `[aws_params]` section, accepted as it is: each of its keys stands for
//! one of ours.

use crate::error::{Error, Result};

use super::layers::Origin;

/// Keys of the original job's `[aws_params]` section and the key each one stands for.
const AWS_PARAMS_ALIASES: &[(&str, &str)] = &[
    ("s3_source_bucket", "source.url"),
    ("s3_target_bucket", "target.url"),
    ("aws_key", "aws.access_key_id"),
    ("aws_secret_key", "aws.secret_access_key"),
    ("aws_region", "aws.region"),
];

/// The key and value an `[aws_params]` entry stands for.
pub(super) fn map_aws_param(key: &str, value: &str, origin: &Origin) -> Result<(&'static str, String)> {
    let Some((_, canonical)) = AWS_PARAMS_ALIASES.iter().find(|(alias, _)| *alias == key) else {
        return Err(Error::Config(format!(
            "{origin}: unknown key `aws_params.{key}`; [aws_params] accepts {}",
            AWS_PARAMS_ALIASES
                .iter()
                .map(|(a, _)| *a)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let value = if canonical.ends_with(".url") {
        bucket_to_url(value)
    } else {
        value.to_string()
    };
    Ok((canonical, value))
}

/// `bucket`, `bucket/prefix` or `s3://bucket/prefix` → `s3://bucket/prefix`.
fn bucket_to_url(value: &str) -> String {
    let value = value.trim();
    if value.contains("://") {
        value.to_string()
    } else {
        format!("s3://{value}")
    }
}
