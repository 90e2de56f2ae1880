//! Telemetry: access log and tracing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// Telemetry settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Access log.
    #[serde(default)]
    pub access_log: AccessLog,
    /// OpenTelemetry traces (off when absent; W3C `traceparent` is passed on
    /// either way). Changes apply at restart.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// How the gateway's own log lines (stderr) are written: `text` for
    /// people, `json` for one JSON object per line (log shippers). The
    /// command line's `--log-format` wins over this. Changes apply at
    /// restart.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// The format of the gateway's own log lines on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `2026-12-01T10:00:00Z  INFO gateway::server: message key=value`;
    /// coloured only when stderr is a terminal (and `NO_COLOR` is unset).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
}
filters::config_enum!(LogFormat { Text = "text", Json = "json" });

/// OpenTelemetry span export over OTLP/HTTP (protobuf).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Collector base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    pub otlp_endpoint: String,
    /// Share of new traces recorded, 0-1; incoming sampled flags are followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the spans (default: `gateway.name`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Spans queued for export; beyond, spans are dropped and counted.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Deadline of one export call.
    #[serde(default = "default_export_timeout")]
    pub export_timeout: Duration,
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_max_queue_size() -> usize {
    2048
}
fn default_export_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Access-log settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Write one JSON line per request to standard output.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Share (0-1) of successful requests (status below 400) that are
    /// logged; failures are always logged.
    #[serde(default = "default_success_sample_ratio")]
    pub success_sample_ratio: f64,
}

fn default_success_sample_ratio() -> f64 {
    1.0
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            success_sample_ratio: default_success_sample_ratio(),
        }
    }
}
