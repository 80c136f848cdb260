//! One parsed YAML file: its value tree plus the `line:col` of every key, so a
//! violation found after merging can still point at the text that caused it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::{Location, Violation};

/// A parsed configuration file, mounted at `mount` in the merged tree
/// (`""` for a deployment file, `"scaling"` for a scaling-policy file).
#[derive(Debug)]
pub struct Document {
    pub file: Arc<PathBuf>,
    pub mount: &'static str,
    pub value: Value,
    /// Dotted path inside this file (`spot.target_qps`, `api_keys[0]`) → where its key starts.
    positions: HashMap<String, (usize, usize)>,
}

impl Document {
    pub fn read(path: &Path, mount: &'static str) -> Result<Self, Violation> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Violation::new(
                Location::File { file: Arc::new(path.to_path_buf()), line: 0, col: 0 },
                mount,
                format!("cannot read the file: {e}"),
            )
        })?;
        Self::parse(&text, path, mount)
    }

    pub fn parse(text: &str, path: &Path, mount: &'static str) -> Result<Self, Violation> {
        let file = Arc::new(path.to_path_buf());
        let at = |line, col| Location::File { file: file.clone(), line, col };
        let value: Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            // serde_yaml appends " at line L column C"; the location already says it.
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            Violation::new(at(line, col), mount, format!("invalid YAML: {message}"))
        })?;
        match &value {
            Value::Mapping(_) => {}
            Value::Null => {
                return Err(Violation::new(
                    at(1, 1),
                    mount,
                    "the file is empty; expected a mapping such as `model: Qwen/Qwen3-0.6B`",
                ));
            }
            other => {
                return Err(Violation::new(
                    at(1, 1),
                    mount,
                    format!("expected a mapping of keys at the top level, found {}", kind_of(other)),
                ));
            }
        }
        let mut recorder = PositionRecorder::default();
        // The text already parsed above, so a scan error here is impossible in practice;
        // if it happens we merely lose positions, never the configuration.
        let _ = Parser::new_from_str(text).load(&mut recorder, false);
        Ok(Self { file, mount, value, positions: recorder.positions })
    }

    /// The location of `path` (relative to this file), or of its nearest ancestor.
    pub fn locate(&self, path: &str) -> Location {
        let mut probe = path;
        loop {
            if let Some(&(line, col)) = self.positions.get(probe) {
                return Location::File { file: self.file.clone(), line, col };
            }
            match probe.rfind(['.', '[']) {
                Some(cut) => probe = &probe[..cut],
                None => {
                    return Location::File { file: self.file.clone(), line: 0, col: 0 };
                }
            }
        }
    }

    /// Whether this file writes the key at `path` (relative to the file).
    pub fn sets(&self, path: &str) -> bool {
        self.positions.contains_key(path)
    }
}

/// A short noun for a YAML value, for messages such as "found a sequence".
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next_index: usize },
}

#[derive(Default)]
struct PositionRecorder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
}

impl PositionRecorder {
    /// Called for every node; returns the node's path when it is a value (not a key).
    fn node_path(&mut self, mark: Marker, scalar: Option<&str>) -> Option<String> {
        let position = (mark.line(), mark.col() + 1);
        match self.stack.last_mut()? {
            Frame::Mapping { path, key } => match key.take() {
                None => {
                    let name = scalar.unwrap_or("?");
                    let child = join(path, name);
                    self.positions.insert(child, position);
                    *key = Some(name.to_string());
                    None
                }
                Some(name) => Some(join(path, &name)),
            },
            Frame::Sequence { path, next_index } => {
                let child = format!("{path}[{next_index}]");
                *next_index += 1;
                self.positions.insert(child.clone(), position);
                Some(child)
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

impl MarkedEventReceiver for PositionRecorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                self.node_path(mark, Some(&text));
            }
            Event::Alias(_) => {
                self.node_path(mark, None);
            }
            Event::MappingStart(..) => {
                let path = if self.stack.is_empty() { Some(String::new()) } else { self.node_path(mark, None) };
                self.stack.push(Frame::Mapping { path: path.unwrap_or_default(), key: None });
            }
            Event::SequenceStart(..) => {
                let path = if self.stack.is_empty() { Some(String::new()) } else { self.node_path(mark, None) };
                self.stack.push(Frame::Sequence { path: path.unwrap_or_default(), next_index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Document, Violation> {
        Document::parse(text, Path::new("t.yaml"), "")
    }

    #[test]
    fn records_line_and_column_of_nested_keys() {
        let doc =
            parse("model: m\nscaling:\n  spot:\n    target_qps: 3\nrouter:\n  api_keys:\n    - env: K\n").unwrap();
        let at = |p: &str| match doc.locate(p) {
            Location::File { line, col, .. } => (line, col),
            Location::Flag(_) | Location::Default => unreachable!(),
        };
        assert_eq!(at("model"), (1, 1));
        assert_eq!(at("scaling.spot.target_qps"), (4, 5));
        assert_eq!(at("router.api_keys[0].env"), (7, 7));
        // Unknown paths fall back to the nearest ancestor that exists.
        assert_eq!(at("scaling.spot.nope"), (3, 3));
    }

    #[test]
    fn empty_and_non_mapping_files_are_rejected() {
        assert!(parse("").unwrap_err().message.contains("empty"));
        assert!(parse("# only a comment\n").unwrap_err().message.contains("empty"));
        assert!(parse("- a\n- b\n").unwrap_err().message.contains("found a sequence"));
        assert!(parse("42\n").unwrap_err().message.contains("found a number"));
    }

    #[test]
    fn syntax_errors_carry_their_location() {
        let err = parse("model: m\nscaling: [unclosed\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(matches!(err.location, Location::File { line, .. } if line >= 2), "{err}");
        let dup = parse("model: a\nmodel: b\n").unwrap_err();
        assert!(dup.message.contains("duplicate"), "{}", dup.message);
    }
}
