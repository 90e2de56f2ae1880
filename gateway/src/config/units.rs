//! Config units: the one duration type of every config file, shared with
//! the policy modules.

pub use filters::units::Duration;
