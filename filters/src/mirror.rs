//! Mirroring decisions: which requests are copied to a shadow cluster.
//!
//! Sampling is either random (each request independently) or, with a
//! sampling key, stable: the key's hash decides, so the same request id is
//! mirrored every time it is seen (useful to replay and compare).

use std::hash::{Hash, Hasher};

/// Whether to mirror a request. `percentage` is 0..=100 (fractions allowed);
/// `key` is the sampling key's value when the target uses one and the
/// request has it.
pub fn sampled(percentage: f64, key: Option<&[u8]>) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    if percentage <= 0.0 {
        return false;
    }
    let point = match key {
        Some(k) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            // Uniform in [0, 1) from the top 53 bits.
            (h.finish() >> 11) as f64 / (1u64 << 53) as f64
        }
        None => fastrand::f64(),
    };
    point * 100.0 < percentage
}

/// `host-shadow` for `host`, keeping a port (Istio's and Envoy's convention).
pub fn shadow_host(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once("]:") {
            return format!("[{ip}]-shadow:{port}");
        }
        return format!("{host}-shadow");
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{h}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_exact() {
        assert!(sampled(100.0, None));
        assert!(!sampled(0.0, Some(b"x")));
    }

    #[test]
    fn keyed_sampling_is_stable_and_proportional() {
        let picked: Vec<bool> = (0..10_000)
            .map(|i| sampled(10.0, Some(format!("req-{i}").as_bytes())))
            .collect();
        let again: Vec<bool> = (0..10_000)
            .map(|i| sampled(10.0, Some(format!("req-{i}").as_bytes())))
            .collect();
        assert_eq!(picked, again, "the same keys are picked every time");
        let n = picked.iter().filter(|p| **p).count();
        // 3 sigma of Binomial(10000, 0.1) is 90.
        assert!((910..=1090).contains(&n), "{n} of 10000 picked at 10%");
    }

    #[test]
    fn random_sampling_is_proportional() {
        let n = (0..10_000).filter(|_| sampled(25.0, None)).count();
        // 3 sigma of Binomial(10000, 0.25) is 130.
        assert!((2370..=2630).contains(&n), "{n} of 10000 picked at 25%");
    }

    #[test]
    fn shadow_hosts_keep_ports() {
        assert_eq!(shadow_host("api.example.com"), "api.example.com-shadow");
        assert_eq!(
            shadow_host("api.example.com:8080"),
            "api.example.com-shadow:8080"
        );
        assert_eq!(shadow_host("127.0.0.1:80"), "127.0.0.1-shadow:80");
    }
}
