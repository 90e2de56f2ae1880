//! Positions of YAML nodes by path, so that semantic errors (a dangling
//! cluster reference, a duplicate name) point at `file:line:column` just like
//! syntax errors do. serde_yaml does not expose spans, so the file is walked
//! once more with yaml-rust2's event parser, which does.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based.
    pub column: usize,
}

/// Map from a node path (`routes[2].match.host`) to where its value starts.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    positions: HashMap<String, LineCol>,
}

impl SourceMap {
    /// Indexes `text`. Unparseable YAML yields an empty map (serde reports
    /// the syntax error with its own position).
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return SourceMap::default();
        }
        SourceMap {
            positions: walker.positions,
        }
    }

    /// Position of `path`, or of its nearest ancestor that exists (a field
    /// left out points at the object that lacks it).
    pub fn locate(&self, path: &str) -> LineCol {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .positions
                        .get("")
                        .copied()
                        .unwrap_or(LineCol { line: 1, column: 1 })
                }
            }
        }
    }

    /// Whether the document has a node at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.positions.contains_key(path)
    }
}

enum Frame {
    /// In a mapping: the path of the mapping, and the pending key if the next
    /// node is a value.
    Map { path: String, key: Option<String> },
    /// In a sequence: the path and the index of the next item.
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    positions: HashMap<String, LineCol>,
}

impl Walker {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn next_node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => key.take().map(|k| {
                if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }
            }),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        // yaml-rust2 documents columns as 1-based but reports them 0-based.
        let pos = LineCol {
            line: mark.line(),
            column: mark.col() + 1,
        };
        self.positions.entry(path.to_string()).or_insert(pos);
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => match self.next_node_path() {
                Some(path) => self.record(&path, mark),
                None => {
                    // A mapping key: remember it for the value that follows.
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(value);
                    }
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.next_node_path() {
                    self.record(&path, mark);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_node_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_node_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(Frame::Seq { path, next: 0 });
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

    const DOC: &str = "\
admin: {listen: 127.0.0.1:9901}
routes:
  - name: a
    match:
      host: example.com
  - name: b
    backends:
      - {cluster: x, weight: 2}
";

    #[test]
    fn finds_nested_paths() {
        let m = SourceMap::build(DOC);
        assert_eq!(
            m.locate("admin.listen"),
            LineCol {
                line: 1,
                column: 17
            }
        );
        assert_eq!(
            m.locate("routes[0].name"),
            LineCol {
                line: 3,
                column: 11
            }
        );
        assert_eq!(
            m.locate("routes[0].match.host"),
            LineCol {
                line: 5,
                column: 13
            }
        );
        assert_eq!(
            m.locate("routes[1].backends[0].cluster"),
            LineCol {
                line: 8,
                column: 19
            }
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_parent() {
        let m = SourceMap::build(DOC);
        assert_eq!(m.locate("routes[1].timeout"), m.locate("routes[1]"));
        assert_eq!(m.locate("routes[1]").line, 6);
        assert!(!m.contains("routes[1].timeout"));
    }
}
