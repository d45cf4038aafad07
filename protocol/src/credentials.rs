//! Reading credentials from request headers, one rule for every side: the
//! filter and the sidecar's public, admin and internal APIs.

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110 §11.1) and may be followed by several spaces;
/// an empty token is no token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let value = authorization.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn one_case_rule_for_the_scheme() {
        assert_eq!(bearer_token("Bearer pk_1"), Some("pk_1"));
        assert_eq!(bearer_token("bearer pk_1"), Some("pk_1"));
        assert_eq!(bearer_token("BEARER pk_1"), Some("pk_1"));
        assert_eq!(bearer_token("  Bearer   pk_1  "), Some("pk_1"));
    }

    #[test]
    fn no_token_without_the_scheme_or_the_token() {
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer    "), None);
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("pk_1"), None);
        assert_eq!(bearer_token("Bearerpk_1"), None);
        assert_eq!(bearer_token(""), None);
    }
}
