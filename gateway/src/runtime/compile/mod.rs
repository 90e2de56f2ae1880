//! The config compiler, split by concern. Each file adds methods to
//! [`super::Compiler`]; errors are collected, never returned early.

mod certificates;
mod client_address;
mod clusters;
mod discovery;
mod egress;
mod identity;
mod listeners;
mod routes;
