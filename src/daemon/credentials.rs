//! Comparing credentials callers present (the admin token, webhook Basic and header auth).
//!
//! Invariant: comparisons take the same time whatever the input: both sides are hashed first,
//! so neither content nor length leaks through timing.

use subtle::ConstantTimeEq;

/// Compares a presented credential with the configured one in constant time. Comparing the raw
/// bytes would return early on a length mismatch and so tell a caller how long the secret is.
pub(crate) fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(given).ct_eq(&Sha256::digest(expected)))
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn secret_comparison_needs_the_exact_bytes() {
        assert!(secret_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!secret_eq(b"s3cret-tokeN", b"s3cret-token"));
        assert!(!secret_eq(b"s3cret", b"s3cret-token"));
        assert!(!secret_eq(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!secret_eq(b"", b"s3cret-token"));
        assert!(secret_eq(b"", b""));
    }
}
