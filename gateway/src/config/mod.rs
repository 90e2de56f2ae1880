//! Configuration: the serde model ([`model`]), units ([`units`]), loading with
//! positions ([`load`], [`source_map`]). Validation happens while compiling
//! the config into a runtime (see [`crate::runtime::compile`]), so that what
//! is checked is exactly what is used.

pub mod load;
pub mod model;
pub mod source_map;
pub mod units;

pub use load::{load, Diagnostic, Diagnostics, LoadedConfig, Section, Sources};
pub use model::*;

/// The JSON Schema of the config file, generated from the Rust types.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
