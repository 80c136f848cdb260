//! Configuration errors: every violation found, each with where it came from.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A key in a file; `line` and `col` are 1-based, 0 when unknown.
    File { file: Arc<PathBuf>, line: usize, col: usize },
    /// A command-line flag such as `--concurrency`.
    Flag(&'static str),
    /// A built-in default or a required value that nobody supplied.
    Default,
}

impl Location {
    /// Orders violations as a reader meets them: files by position, then flags.
    pub(crate) fn sort_key(&self) -> (u8, Option<&PathBuf>, usize, usize) {
        match self {
            Location::File { file, line, col } => (0, Some(file), *line, *col),
            Location::Flag(_) => (1, None, 0, 0),
            Location::Default => (2, None, 0, 0),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line: 0, .. } => write!(f, "{}", file.display()),
            Location::File { file, line, col } => write!(f, "{}:{line}:{col}", file.display()),
            Location::Flag(flag) => write!(f, "flag {flag}"),
            Location::Default => f.write_str("configuration"),
        }
    }
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub location: Location,
    /// Dotted key path as the user wrote it in that file (`spot.target_qps`); empty for the whole file.
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(location: Location, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location, path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.location, self.path, self.message)
        }
    }
}

/// The configuration is unusable; `violations` lists every reason at once.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub violations: Vec<Violation>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.violations.len();
        write!(f, "invalid configuration ({count} problem{}):", if count == 1 { "" } else { "s" })?;
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        Ok(())
    }
}
