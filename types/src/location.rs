//! Where a source or a table lives: an S3 bucket and prefix, or a local folder.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket/prefix`; the prefix has no leading or trailing `/` (may be empty).
    S3 { bucket: String, prefix: String },
    /// An absolute local folder.
    Local(PathBuf),
}

impl Location {
    /// Parses `s3://bucket/prefix`, `file:///abs/path` or a plain path (made absolute).
    pub fn parse(value: &str) -> Result<Location, String> {
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("missing bucket name: expected s3://bucket/prefix".into());
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let path = if let Some(rest) = value.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err("file:// URLs need an absolute path, e.g. file:///data/in".into());
            }
            PathBuf::from(rest)
        } else if value.contains("://") {
            return Err("expected s3://bucket/prefix, file:///abs/path or a folder path".into());
        } else if value.is_empty() {
            return Err("is empty".into());
        } else {
            PathBuf::from(value)
        };
        let absolute = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve a relative path: {e}"))?
                .join(path)
        };
        Ok(Location::Local(normalize(absolute)))
    }

    /// The URL of `key` under this location.
    pub fn join(&self, key: &str) -> String {
        match self {
            Location::S3 { .. } => format!("{self}/{key}"),
            Location::Local(p) => p.join(key).display().to_string(),
        }
    }
}

/// Where `inner` sits under `outer`, as a `/`-separated key prefix relative to `outer`
/// (`""`: the same place); `None` when `inner` is not under `outer`. Compares whole path
/// segments: `s3://b/x` does not contain `s3://b/xy`.
pub fn relative_under(outer: &Location, inner: &Location) -> Option<String> {
    match (outer, inner) {
        (
            Location::S3 {
                bucket: ob,
                prefix: op,
            },
            Location::S3 {
                bucket: ib,
                prefix: ip,
            },
        ) if ob == ib => {
            if op.is_empty() {
                Some(ip.clone())
            } else if ip == op {
                Some(String::new())
            } else {
                ip.strip_prefix(op.as_str())?
                    .strip_prefix('/')
                    .map(str::to_string)
            }
        }
        (Location::Local(o), Location::Local(i)) => {
            let rest = i.strip_prefix(o).ok()?;
            Some(
                rest.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            )
        }
        _ => None,
    }
}

/// The config error for a table root that would hold the source files (SPEC §1, §3): a full
/// run replaces and deletes objects under the table root, so the source must live outside it.
/// A table root *inside* the source folder is fine: listings skip it (see `run::Target`).
pub fn overlap_error(source: &Location, target: &Location) -> Option<String> {
    let inside = relative_under(target, source)?;
    Some(if inside.is_empty() {
        "is the same place as source.url; put the table in its own folder or prefix, e.g. \
         <source.url>/table or another bucket"
            .to_string()
    } else {
        format!(
            "contains source.url (the source is `{inside}/` under the table root), and full runs \
             replace and delete objects under the table root; choose a target.url outside the \
             source, e.g. a sibling folder or another bucket"
        )
    })
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: PathBuf) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Location::parse("s3://b/p/q/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(Location::parse("s3://b").unwrap().to_string(), "s3://b");
        assert_eq!(
            Location::parse("file:///data/in").unwrap(),
            Location::Local("/data/in".into())
        );
        assert_eq!(
            Location::parse("/a/./b/../c").unwrap(),
            Location::Local("/a/c".into())
        );
        assert!(Location::parse("gs://x").is_err());
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("file://rel").is_err());
    }

    #[test]
    fn overlap_is_judged_by_whole_segments() {
        let l = |s: &str| Location::parse(s).unwrap();
        assert_eq!(
            relative_under(&l("s3://b/x"), &l("s3://b/x/t")).as_deref(),
            Some("t")
        );
        assert_eq!(
            relative_under(&l("s3://b"), &l("s3://b/x/t")).as_deref(),
            Some("x/t")
        );
        assert_eq!(
            relative_under(&l("s3://b/x"), &l("s3://b/x")).as_deref(),
            Some("")
        );
        assert_eq!(relative_under(&l("s3://b/x"), &l("s3://b/xy")), None);
        assert_eq!(relative_under(&l("s3://b/x"), &l("s3://c/x/t")), None);
        assert_eq!(
            relative_under(&l("/d/in"), &l("/d/in/out/t")).as_deref(),
            Some("out/t")
        );
        assert_eq!(relative_under(&l("/d/in"), &l("/d/input")), None);
        assert!(
            overlap_error(&l("s3://b/x"), &l("s3://b/x/t")).is_none(),
            "table inside the source: allowed"
        );
        assert!(
            overlap_error(&l("s3://b/x/in"), &l("s3://b/x"))
                .unwrap()
                .contains("contains source.url")
        );
        assert!(
            overlap_error(&l("/d/x"), &l("/d/x"))
                .unwrap()
                .contains("same place")
        );
        assert!(overlap_error(&l("/d/x"), &l("s3://b/x")).is_none());
    }
}
