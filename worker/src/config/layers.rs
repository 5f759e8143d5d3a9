//! Layering: `common.conf`, then `LAKELOAD_<SECTION>_<KEY>` variables, then `--set`, each value
//! kept with where it came from so an error can point at it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::keys::{KEYS, SECRET_KEYS, lookup_key};
use super::legacy::map_aws_param;

/// Where a raw value came from, so errors can point at it.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Set,
    Program,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Set => write!(f, "--set"),
            Origin::Program => write!(f, "the program"),
        }
    }
}

/// Raw `section.key → (value, origin)` pairs, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    values: BTreeMap<String, (String, Origin)>,
}

impl RawConfig {
    /// Reads an INI file. Accepts the original job's `[aws_params]` section.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read config file {}: {e}; pass an existing file with --config PATH \
                 or LAKELOAD_CONFIG",
                path.display()
            ))
        })?;
        Self::from_ini_str(&text, Origin::File(path.to_path_buf()))
    }

    pub fn from_ini_str(text: &str, origin: Origin) -> Result<Self> {
        let options = ini::ParseOption {
            enabled_quote: true,
            // Backslashes stay literal: Windows-style paths, `\t` delimiters, strptime formats.
            enabled_escape: false,
            enabled_indented_mutiline_value: false,
            enabled_preserve_key_leading_whitespace: false,
        };
        let ini = ini::Ini::load_from_str_opt(text, options)
            .map_err(|e| Error::Config(format!("{origin}: not a valid INI file: {e}")))?;
        let mut raw = RawConfig::default();
        for (section, props) in ini.iter() {
            let Some(section) = section else {
                if let Some((key, _)) = props.iter().next() {
                    return Err(Error::Config(format!(
                        "{origin}: key `{key}` is outside any section; put it under one of \
                         [source] [target] [schema] [run] [aws] [lock] [logging]"
                    )));
                }
                continue;
            };
            let section = section.trim().to_ascii_lowercase();
            for (key, value) in props.iter() {
                let key = key.trim().to_ascii_lowercase();
                if section == "aws_params" {
                    let (canonical, value) = map_aws_param(&key, value, &origin)?;
                    raw.insert_checked(canonical, value, origin.clone(), &format!("aws_params.{key}"))?;
                    continue;
                }
                let name = format!("{section}.{key}");
                lookup_key(&name, &origin)?;
                raw.insert_checked(&name, value.to_string(), origin.clone(), &name)?;
            }
        }
        Ok(raw)
    }

    fn insert_checked(&mut self, name: &str, value: String, origin: Origin, spelled: &str) -> Result<()> {
        if let Some((_, previous)) = self.values.get(name)
            && *previous == origin
        {
            return Err(Error::Config(format!(
                "{origin}: `{spelled}` sets `{name}`, which is already set in the same file; keep one"
            )));
        }
        self.values.insert(name.to_string(), (value, origin));
        Ok(())
    }

    /// Applies `LAKELOAD_<SECTION>_<KEY>` variables. `LAKELOAD_CONFIG` is the config path, not a key.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) -> Result<()> {
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix("LAKELOAD_") else {
                continue;
            };
            if rest == "CONFIG" || var == crate::faults::ENV {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            // Only variables naming one of our sections are settings; others that happen to
            // share the prefix (LAKELOAD_VENV, LAKELOAD_OPERATOR_…) belong to other tools.
            let Some((section, key)) = lower
                .split_once('_')
                .filter(|(s, _)| KEYS.iter().any(|k| k.section == *s))
            else {
                continue;
            };
            let name = format!("{section}.{key}");
            lookup_key(&name, &Origin::Env(var.clone()))?;
            self.values.insert(name, (value, Origin::Env(var)));
        }
        Ok(())
    }

    /// Applies `--set section.key=value` arguments.
    pub fn apply_sets(&mut self, sets: &[String]) -> Result<()> {
        for set in sets {
            let Some((name, value)) = set.split_once('=') else {
                return Err(Error::Config(format!(
                    "--set {set}: expected section.key=value, e.g. --set run.mode=full"
                )));
            };
            let name = name.trim().to_ascii_lowercase();
            lookup_key(&name, &Origin::Set)?;
            self.values.insert(name, (value.trim().to_string(), Origin::Set));
        }
        Ok(())
    }

    /// Sets a value from code (the demo, tests).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values
            .insert(name.to_string(), (value.into(), Origin::Program));
    }

    pub(super) fn get(&self, name: &str) -> Option<(&str, &Origin)> {
        if let Some((v, o)) = self.values.get(name) {
            return Some((v.as_str(), o));
        }
        let spec = KEYS.iter().find(|k| format!("{}.{}", k.section, k.key) == name)?;
        spec.default.map(|d| (d, &Origin::Default))
    }

    /// The effective settings, secrets masked, for `lakeload config` style output and logs.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        KEYS.iter()
            .filter_map(|spec| {
                let name = format!("{}.{}", spec.section, spec.key);
                let (value, origin) = self.get(&name)?;
                let shown = if SECRET_KEYS.contains(&name.as_str()) {
                    "****".to_string()
                } else {
                    value.to_string()
                };
                Some((name, shown, origin.to_string()))
            })
            .collect()
    }
}

/// Where to look for the config file: `--config`, then `LAKELOAD_CONFIG`, then `./common.conf`.
pub fn config_path(explicit: Option<&Path>, env_value: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env_value.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("common.conf");
    local.exists().then_some(local)
}

/// Loads file + environment + `--set` into raw values (not yet validated).
pub fn load_raw(explicit: Option<&Path>, sets: &[String]) -> Result<RawConfig> {
    let env_config = std::env::var("LAKELOAD_CONFIG").ok();
    let mut raw = match config_path(explicit, env_config.as_deref()) {
        Some(path) => RawConfig::from_file(&path)?,
        None => RawConfig::default(),
    };
    raw.apply_env(std::env::vars())?;
    raw.apply_sets(sets)?;
    Ok(raw)
}
