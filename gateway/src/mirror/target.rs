//! A route's compiled mirror target.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tokio::sync::Semaphore;

use crate::runtime::cluster::Cluster;

/// A compiled mirror target of a route.
pub struct MirrorTarget {
    /// Shadow cluster.
    pub cluster: Arc<Cluster>,
    /// Share mirrored, 0-100.
    pub percentage: f64,
    /// Sampling key header.
    pub sample_key: Option<HeaderName>,
    /// Headers removed from the copy.
    pub strip: Vec<HeaderName>,
    /// Body cap.
    pub max_body_bytes: u64,
    /// Copies in flight.
    pub permits: Arc<Semaphore>,
    /// Deadline of one copy.
    pub timeout: Duration,
    /// Compare status classes.
    pub compare_status: bool,
    /// Compare body digests.
    pub compare_body: bool,
}
