//! Per-request policies of the gateway. Each module holds one policy: its
//! config struct (serde + schemars), its compiled form and its logic, and unit
//! tests. Policies work on plain request/response data, never on a server, so
//! they are tested without one.

pub mod authz;
pub mod config_enum;
pub mod config_string;
pub mod cors;
pub mod egress;
pub mod headers;
pub mod identity;
pub mod mirror;
pub mod path;
pub mod ratelimit;
pub mod redirect;
pub mod units;
