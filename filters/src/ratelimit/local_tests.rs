//! GCRA accuracy, isolation and the memory bound of the local limiter.

use std::num::NonZeroU32;
use std::time::Duration;

use super::local::LocalLimiter;
use governor::clock::FakeRelativeClock;

fn limiter(
    rate: &str,
    burst: u32,
    max_keys: u32,
) -> (LocalLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let l = LocalLimiter::with_clock(
        rate.parse().unwrap(),
        NonZeroU32::new(burst).unwrap(),
        NonZeroU32::new(max_keys).unwrap(),
        clock.clone(),
    );
    (l, clock)
}

/// Offers one request per millisecond for `secs` and counts the allowed.
fn allowed_over(secs: u64, l: &LocalLimiter<FakeRelativeClock>, clock: &FakeRelativeClock) -> u64 {
    let mut allowed = 0;
    for _ in 0..secs * 1000 {
        if l.check(7).allowed {
            allowed += 1;
        }
        clock.advance(Duration::from_millis(1));
    }
    allowed
}

#[test]
fn gcra_accuracy_at_50_per_second_burst_10() {
    for secs in [2u64, 4] {
        let (l, clock) = limiter("50/s", 10, 1000);
        let allowed = allowed_over(secs, &l, &clock);
        let expected = 50 * secs + 10;
        let err = (allowed as f64 - expected as f64).abs() / expected as f64;
        println!("50/s burst 10 over {secs}s: allowed {allowed}, expected {expected}");
        assert!(err <= 0.10, "allowed {allowed}, expected {expected}");
    }
}

#[test]
fn remaining_and_reset_follow_the_bucket() {
    let (l, clock) = limiter("10/s", 3, 1000);
    let first = l.check(1);
    assert_eq!((first.allowed, first.remaining), (true, 2));
    assert_eq!(first.reset, Duration::from_millis(100));
    assert_eq!(l.check(1).remaining, 1);
    assert_eq!(l.check(1).remaining, 0);
    let denied = l.check(1);
    assert!(!denied.allowed);
    assert_eq!(denied.reset, Duration::from_millis(100));
    clock.advance(Duration::from_millis(40));
    assert_eq!(l.check(1).reset, Duration::from_millis(60));
    clock.advance(Duration::from_millis(60));
    let ok = l.check(1);
    assert_eq!((ok.allowed, ok.remaining), (true, 0));
}

#[test]
fn keys_are_isolated() {
    let (l, _clock) = limiter("1/h", 2, 1000);
    assert!(l.check(1).allowed && l.check(1).allowed);
    assert!(!l.check(1).allowed);
    assert!(l.check(2).allowed, "another key has its own bucket");
}

#[test]
fn memory_stays_bounded_under_a_flood_of_keys() {
    // Frozen clock and a slow rate: no key ever becomes idle, so every
    // insert past the cap must evict.
    let max_keys = 10_000u32;
    let (l, _clock) = limiter("1/h", 5, max_keys);
    let mut peak = 0;
    for k in 0..200_000u64 {
        let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        assert!(l.check(key).allowed, "a new key always has its burst");
        if k % 997 == 0 {
            peak = peak.max(l.len());
        }
    }
    peak = peak.max(l.len());
    println!(
        "200000 keys into max_keys {max_keys}: tracked {} (peak {peak}), evictions {}, {} bytes (bound {})",
        l.len(), l.evictions(), l.memory_bytes(), l.memory_bound_bytes()
    );
    assert!(peak <= max_keys as usize);
    assert!(l.memory_bytes() <= l.memory_bound_bytes());
    assert!(l.memory_bound_bytes() <= 80 * max_keys as usize + 16_384);
    // The documented default: 100,000 keys in at most 4.5 MB.
    let (d, _) = limiter("100/s", 100, 100_000);
    assert!(
        d.memory_bound_bytes() <= 4_500_000,
        "{}",
        d.memory_bound_bytes()
    );
}

#[test]
fn idle_keys_are_dropped_before_busy_ones() {
    let (l, clock) = limiter("100/s", 1, 1024);
    for k in 0..5_000u64 {
        l.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        clock.advance(Duration::from_millis(1));
    }
    // Each key went idle 10 ms after its request: sweeps freed room
    // without evicting anyone busy.
    assert!(l.len() <= 1024);
    assert_eq!(l.evictions(), 0);
    clock.advance(Duration::from_secs(1));
    l.purge_idle();
    assert!(l.is_empty());
}
