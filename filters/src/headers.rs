//! Header rewriting: `set`, `add` and `remove` on request or response headers.
//!
//! Order of application matches Envoy's: removals first, then `set`
//! (replacing any existing values), then `add` (appending).

use std::collections::BTreeMap;

use http::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Header edits as written in the config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers to set, replacing existing values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to append, keeping existing values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Header names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Why a header edit cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderEditError {
    /// The name is not a valid HTTP field name.
    #[error("invalid header name `{0}`")]
    Name(String),
    /// The value contains bytes not allowed in an HTTP field value.
    #[error("invalid value for header `{0}`")]
    Value(String),
}

/// Where compiled edits are applied: anything that stores HTTP headers.
pub trait HeaderSink {
    /// Replace all values of `name` with `value`.
    fn set_header(&mut self, name: &HeaderName, value: &HeaderValue);
    /// Append `value` to `name`.
    fn add_header(&mut self, name: &HeaderName, value: &HeaderValue);
    /// Remove all values of `name`.
    fn remove_header(&mut self, name: &HeaderName);
}

impl HeaderSink for http::HeaderMap {
    fn set_header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.insert(name.clone(), value.clone());
    }
    fn add_header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.append(name.clone(), value.clone());
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.remove(name);
    }
}

/// Validated, ready-to-apply header edits.
#[derive(Clone, Debug, Default)]
pub struct CompiledHeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl CompiledHeaderEdits {
    /// Validates names and values; reports every bad entry.
    pub fn compile(edits: &HeaderEdits) -> Result<Self, Vec<HeaderEditError>> {
        let mut errors = Vec::new();
        let name = |n: &str, errors: &mut Vec<HeaderEditError>| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| errors.push(HeaderEditError::Name(n.to_string())))
                .ok()
        };
        let remove: Vec<_> = edits
            .remove
            .iter()
            .filter_map(|n| name(n, &mut errors))
            .collect();
        let pairs = |m: &BTreeMap<String, String>, errors: &mut Vec<HeaderEditError>| -> Vec<_> {
            m.iter()
                .filter_map(|(n, v)| {
                    let hn = name(n, errors)?;
                    let hv = HeaderValue::from_str(v)
                        .map_err(|_| errors.push(HeaderEditError::Value(n.clone())))
                        .ok()?;
                    Some((hn, hv))
                })
                .collect()
        };
        let set = pairs(&edits.set, &mut errors);
        let add = pairs(&edits.add, &mut errors);
        if errors.is_empty() {
            Ok(CompiledHeaderEdits { remove, set, add })
        } else {
            Err(errors)
        }
    }

    /// True when there is nothing to do (lets callers skip the call).
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits: remove, then set, then add.
    pub fn apply<S: HeaderSink + ?Sized>(&self, headers: &mut S) {
        for n in &self.remove {
            headers.remove_header(n);
        }
        for (n, v) in &self.set {
            headers.set_header(n, v);
        }
        for (n, v) in &self.add {
            headers.add_header(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderEdits {
        let m = |xs: &[(&str, &str)]| {
            xs.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        HeaderEdits {
            set: m(set),
            add: m(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn remove_then_set_then_add() {
        let c = CompiledHeaderEdits::compile(&edits(
            &[("x-set", "new")],
            &[("x-add", "two")],
            &["x-gone", "x-set"],
        ))
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-gone", HeaderValue::from_static("1"));
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("one"));
        c.apply(&mut h);
        assert!(h.get("x-gone").is_none());
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(
            h.get_all("x-add").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let err = CompiledHeaderEdits::compile(&edits(
            &[("bad name", "v")],
            &[("x-ok", "line\nbreak")],
            &["also bad"],
        ))
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                HeaderEditError::Name("also bad".into()),
                HeaderEditError::Name("bad name".into()),
                HeaderEditError::Value("x-ok".into()),
            ]
        );
    }

    #[test]
    fn empty_edits_are_empty() {
        assert!(CompiledHeaderEdits::compile(&HeaderEdits::default())
            .unwrap()
            .is_empty());
    }
}
