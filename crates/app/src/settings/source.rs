//! Where a setting's raw value came from, and the raw layers before they
//! are parsed: flags, environment, file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::SettingsError;
use super::key::Key;

/// Where an effective value came from, named in every error about it so an
/// operator knows which of the flag, the variable or the file to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, such as `--bind`.
    Flag(&'static str),
    /// An environment variable, such as `SPENDGATE_HTTP_BIND`.
    Env(&'static str),
    /// A key of the TOML configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// The dotted key inside it, such as `http.bind`.
        key: &'static str,
    },
    /// Nothing set it: the built-in default.
    Default,
}

impl Origin {
    /// Higher wins: flag 3, environment 2, file 1, default 0.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Origin::Flag(_) => 3,
            Origin::Env(_) => 2,
            Origin::File { .. } => 1,
            Origin::Default => 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File { path, key } => write!(f, "config file {} (key {key})", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A raw value: one string (a list value may be comma-separated) or a
/// list (repeated flags, a TOML array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Raw {
    One(String),
    List(Vec<String>),
    Bool(bool),
}

impl Raw {
    /// The items of a list value: a list as is, a string split on commas
    /// (blank items dropped, each trimmed).
    pub(super) fn items(&self) -> Vec<String> {
        match self {
            Raw::List(items) => items.clone(),
            Raw::One(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Raw::Bool(b) => vec![b.to_string()],
        }
    }

    /// The value as one string.
    pub(super) fn text(&self) -> String {
        match self {
            Raw::One(text) => text.clone(),
            Raw::List(items) => items.join(","),
            Raw::Bool(b) => b.to_string(),
        }
    }
}

/// The raw values of one layer, by key.
#[derive(Debug, Clone, Default)]
pub(super) struct Layer(pub(super) BTreeMap<Key, Raw>);

/// The three layers, highest precedence first.
#[derive(Debug, Default)]
pub(super) struct Layers {
    pub(super) flags: Layer,
    pub(super) env: Layer,
    pub(super) file: Option<(PathBuf, Layer)>,
}

impl Layers {
    /// The winning raw value of `key` and where it came from.
    pub(super) fn get(&self, key: Key) -> Option<(&Raw, Origin)> {
        if let Some(raw) = self.flags.0.get(&key) {
            return Some((raw, Origin::Flag(key.flag())));
        }
        if let Some(raw) = self.env.0.get(&key) {
            return Some((raw, Origin::Env(key.env())));
        }
        if let Some((path, layer)) = &self.file
            && let Some(raw) = layer.0.get(&key)
        {
            return Some((
                raw,
                Origin::File {
                    path: path.clone(),
                    key: key.name(),
                },
            ));
        }
        None
    }
}

/// Reads the environment layer through `env` (empty variables count as
/// unset, as container tooling often sets them so).
pub(super) fn env_layer(env: &dyn Fn(&str) -> Option<String>) -> Layer {
    let mut layer = Layer::default();
    for key in Key::ALL {
        if let Some(value) = env(key.env()).filter(|v| !v.trim().is_empty()) {
            layer.0.insert(key, Raw::One(value));
        }
    }
    layer
}

/// Reads and flattens the TOML file at `path`: unknown keys and wrong
/// types are errors naming the file.
pub(super) fn file_layer(path: &Path) -> Result<Layer, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::FileUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|source| SettingsError::FileSyntax {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let mut layer = Layer::default();
    flatten(path, "", &table, &mut layer)?;
    Ok(layer)
}

fn flatten(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    out: &mut Layer,
) -> Result<(), SettingsError> {
    for (name, value) in table {
        let dotted = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let toml::Value::Table(inner) = value {
            if Key::is_section(&dotted) {
                flatten(path, &dotted, inner, out)?;
                continue;
            }
            return Err(SettingsError::UnknownKey {
                path: path.to_path_buf(),
                key: dotted,
            });
        }
        let Some(key) = Key::from_name(&dotted) else {
            return Err(SettingsError::UnknownKey {
                path: path.to_path_buf(),
                key: dotted,
            });
        };
        let wrong_type = |expected: &'static str| SettingsError::Invalid {
            key: key.name(),
            origin: Origin::File {
                path: path.to_path_buf(),
                key: key.name(),
            },
            message: format!("expected {expected}, found a TOML {}", value.type_str()),
        };
        let raw = match value {
            toml::Value::String(s) => Raw::One(s.clone()),
            toml::Value::Integer(i) => Raw::One(i.to_string()),
            toml::Value::Boolean(b) => Raw::Bool(*b),
            toml::Value::Array(items) if key.is_list() => Raw::List(
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| wrong_type("an array of strings"))?,
            ),
            _ => return Err(wrong_type(key.expected())),
        };
        out.0.insert(key, raw);
    }
    Ok(())
}
