//! The body digest of compare mode.

use std::hash::Hasher;

/// A running digest of a response body (compare mode), chunking-independent.
#[derive(Default)]
pub struct BodyDigest {
    hasher: std::collections::hash_map::DefaultHasher,
}

impl BodyDigest {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.write(data);
    }
    /// The digest.
    pub fn finish(&self) -> u64 {
        self.hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_does_not_depend_on_chunking() {
        let mut one = BodyDigest::default();
        one.update(b"hello world");
        let mut two = BodyDigest::default();
        two.update(b"hello");
        two.update(b" world");
        assert_eq!(one.finish(), two.finish());
        let mut other = BodyDigest::default();
        other.update(b"hello there");
        assert_ne!(one.finish(), other.finish());
    }
}
