//! OTLP receivers (docs/receiving.md): gRPC on 4317 and HTTP on 4318, both feeding the
//! [`Pipeline`](crate::pipeline::Pipeline).

pub mod grpc;
pub mod http;

/// Checks an `Authorization` header value against the configured bearer token.
pub(crate) fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else { return false };
    let Some(given) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    // Constant-time in the length of the expected token, so that timing does not
    // reveal how much of a guess was right.
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod token_tests {
    use super::bearer_matches;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some(b"Bearer abc"), "abc"));
        assert!(!bearer_matches(Some(b"Bearer abd"), "abc"));
        assert!(!bearer_matches(Some(b"Bearer ab"), "abc"));
        assert!(!bearer_matches(Some(b"Basic abc"), "abc"));
        assert!(!bearer_matches(None, "abc"));
    }
}
