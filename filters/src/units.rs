//! Human-friendly durations in config files (`250ms`, `10s`, `1m`): one
//! type for the gateway's config and every policy module. Rates (`100/s`)
//! belong to the rate-limit rules ([`crate::ratelimit::Rate`]).

use std::fmt;
use std::str::FromStr;

/// A duration written as an integer and a unit: `ms`, `s`, `m` or `h`
/// (e.g. `250ms`, `10s`, `5m`). A bare `0` is accepted as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    /// Builds a duration from seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    /// The standard-library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Duration(std::time::Duration::ZERO));
        }
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration `{s}` has no unit (use ms, s, m or h)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration `{s}` must start with a whole number"))?;
        let ms = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => {
                return Err(format!(
                    "duration `{s}` has unknown unit `{unit}` (use ms, s, m or h)"
                ))
            }
        }
        .ok_or_else(|| format!("duration `{s}` is too large"))?;
        Ok(Duration::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

crate::config_string!(
    Duration,
    "Duration",
    pattern: "^(0|[0-9]+(ms|s|m|h))$",
    "A duration such as `250ms`, `10s`, `5m` or `1h`."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            "250ms".parse::<Duration>().unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!("10s".parse::<Duration>().unwrap(), Duration::from_secs(10));
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::from_secs(120));
        assert_eq!("1h".parse::<Duration>().unwrap(), Duration::from_secs(3600));
        assert_eq!("0".parse::<Duration>().unwrap(), Duration::default());
    }

    #[test]
    fn durations_reject_garbage() {
        for bad in [
            "10",
            "s",
            "1.5s",
            "10 parsecs",
            "-1s",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} accepted");
        }
    }
}
