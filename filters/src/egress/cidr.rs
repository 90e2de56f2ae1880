//! [`Cidr`]: an IPv4 or IPv6 network written `a.b.c.d/n` or `x::/n`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network: an address with its host bits zero and a prefix length.
///
/// Written `10.0.0.0/8`, `fd00::/8`, or a bare address (`/32` or `/128`).
/// Addresses are in the strict standard form (no `inet_aton` spellings such
/// as `127.1`); host bits must be zero (`10.0.0.1/8` is refused as a likely
/// typo). [`contains`](Cidr::contains) treats an IPv4-mapped IPv6 address
/// (`::ffff:10.1.2.3`) as the IPv4 address it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an IP address")]
    BadAddress(String),
    /// The prefix length is not a number within 0..=32 (IPv4) or 0..=128.
    #[error("bad prefix length `{0}`")]
    BadPrefix(String),
    /// Bits below the prefix are set.
    #[error("`{given}` has host bits set (did you mean `{suggested}`?)")]
    HostBits {
        /// The CIDR as written.
        given: String,
        /// The network with the host bits cleared.
        suggested: String,
    },
}

impl Cidr {
    /// The network `addr/prefix`; refuses a prefix that is too long and set
    /// host bits.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError::BadPrefix(prefix.to_string()));
        }
        let network = mask(addr, prefix);
        if network != addr {
            return Err(CidrError::HostBits {
                given: format!("{addr}/{prefix}"),
                suggested: format!("{network}/{prefix}"),
            });
        }
        Ok(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether this names one address (`/32` or `/128`).
    pub fn is_single_address(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is inside the network. An IPv4-mapped IPv6 address is
    /// taken as its IPv4 address, and an IPv4 address is inside an IPv6
    /// network that contains its mapped form (`::ffff:0:0/96` holds every
    /// IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(IpAddr::V4(ip), self.prefix) == IpAddr::V4(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(IpAddr::V6(ip), self.prefix) == IpAddr::V6(net)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                mask(IpAddr::V6(ip.to_ipv6_mapped()), self.prefix) == IpAddr::V6(net)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// `addr` with every bit below `prefix` cleared (`prefix` at most the width).
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        let prefix = match prefix {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| CidrError::BadPrefix(p.to_string()))?
            }
            Some(p) => return Err(CidrError::BadPrefix(p.to_string())),
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

crate::config_string!(
    Cidr,
    "EgressCidr",
    "An IP network such as `10.0.0.0/8` or `fd00::/8`, or one address."
);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for (text, printed) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.7", "192.168.1.7/32"),
            ("fd00::/8", "fd00::/8"),
            ("::/0", "::/0"),
            ("::1", "::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::ffff:0:0/96", "::ffff:0.0.0.0/96"),
        ] {
            let c: Cidr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.to_string(), printed);
            assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
        }
    }

    #[test]
    fn refuses_bad_text() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "::/129",
            "10.1/16",
            "0x0a000000/8",
            "010.0.0.0/8",
            "[::1]/128",
            "fe80::1%eth0",
            "example.com/8",
            "10.0.0.0 /8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_host_bits_with_a_suggestion() {
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.0.0.1/8` has host bits set (did you mean `10.0.0.0/8`?)"
        );
        assert!("fd00::1/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn contains_table() {
        for (cidr, addr, want) in [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "9.255.255.255", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::ffff:11.1.2.3", false),
            ("10.0.0.0/8", "64:ff9b::a01:203", false),
            ("10.0.0.0/8", "::a01:203", false),
            ("::/0", "::1", true),
            ("::/0", "10.0.0.1", true),
            ("::ffff:0:0/96", "10.0.0.1", true),
            ("::ffff:0:0/96", "::ffff:10.0.0.1", true),
            ("::ffff:a00:0/104", "10.9.9.9", true),
            ("::ffff:a00:0/104", "11.9.9.9", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe12::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
        ] {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip(addr)), want, "{cidr} ∋ {addr}");
        }
    }

    #[test]
    fn single_addresses() {
        assert!("1.2.3.4".parse::<Cidr>().unwrap().is_single_address());
        assert!("::1/128".parse::<Cidr>().unwrap().is_single_address());
        assert!(!"1.2.3.0/24".parse::<Cidr>().unwrap().is_single_address());
    }

    #[test]
    fn serde_round_trip() {
        let c: Vec<Cidr> = serde_yaml::from_str("[10.0.0.0/8, '::1']").unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"["10.0.0.0/8","::1/128"]"#
        );
        let e = serde_yaml::from_str::<Vec<Cidr>>("[10.0.0.1/8]").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
    }
}
