//! Who is calling and for which user: the paywall key, the user id from the
//! path, header or body, and which requests the paywall handles at all.

use tollgate_protocol::ApiError;

/// Header an app can use to name its end user.
pub const USER_HEADER: &str = "x-paywall-user";

/// What a request path means to the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/{user}/chat/completions`
    ChatForUser(String),
    /// Anything else: not metered here (Envoy's routes decide where it goes).
    Other,
}

pub fn classify_path(path: &str) -> PathKind {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let Some(rest) = path.strip_prefix("/v1/") else {
        return PathKind::Other;
    };
    if rest == "chat/completions" {
        return PathKind::Chat;
    }
    match rest.strip_suffix("/chat/completions") {
        Some(user) if !user.is_empty() && !user.contains('/') => {
            PathKind::ChatForUser(percent_decode(user))
        }
        _ => PathKind::Other,
    }
}

/// %XX decoding for user ids in the path; invalid escapes are kept verbatim.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The paywall key from `Authorization: Bearer …`.
pub fn bearer_key(authorization: Option<&str>) -> Result<String, ApiError> {
    let missing = || {
        ApiError::authentication(
            "You didn't provide an API key. Send your paywall key as `Authorization: Bearer <key>`.",
        )
    };
    let key = authorization
        .and_then(tollgate_protocol::bearer_token)
        .ok_or_else(missing)?;
    Ok(key.to_string())
}

const MAX_USER_LEN: usize = 256;

/// Why a request names no usable end user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserIdError {
    /// No user id anywhere.
    Missing,
    /// Two places name different users: `place` holds `other`, another `first`.
    Conflicting {
        place: &'static str,
        other: String,
        first: String,
    },
    /// Empty, too long or unprintable.
    Invalid,
}

impl From<UserIdError> for ApiError {
    fn from(e: UserIdError) -> ApiError {
        let (code, message) = match e {
            UserIdError::Missing => (
                "missing_user",
                "No user id: set the `user` field, the X-Paywall-User header, or use /v1/{user}/chat/completions.".to_string(),
            ),
            UserIdError::Conflicting { place, other, first } => (
                "conflicting_user",
                format!("The user id in the {place} ({other:?}) disagrees with another user id in the request ({first:?})."),
            ),
            UserIdError::Invalid => (
                "invalid_user",
                format!("The user id must be 1 to {MAX_USER_LEN} printable characters."),
            ),
        };
        ApiError::invalid_request(code, message).with_param("user")
    }
}

/// Reconciles the user ids a request may carry. Two that disagree is an error,
/// as is none at all.
pub fn resolve_user(
    path_user: Option<&str>,
    header_user: Option<&str>,
    body_user: Option<&str>,
) -> Result<String, UserIdError> {
    let given: Vec<(&'static str, &str)> = [
        ("path", path_user),
        ("header", header_user),
        ("body", body_user),
    ]
    .into_iter()
    .filter_map(|(src, u)| u.map(|u| (src, u.trim())))
    .collect();
    let Some(&(_, first)) = given.first() else {
        return Err(UserIdError::Missing);
    };
    if let Some(&(place, other)) = given.iter().find(|(_, u)| *u != first) {
        return Err(UserIdError::Conflicting {
            place,
            other: other.to_string(),
            first: first.to_string(),
        });
    }
    // U+FFFD stands for bytes that were not UTF-8 in a header.
    let unprintable = |c: char| c.is_control() || c == char::REPLACEMENT_CHARACTER;
    if first.is_empty() || first.len() > MAX_USER_LEN || first.chars().any(unprintable) {
        return Err(UserIdError::Invalid);
    }
    Ok(first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify_path("/v1/chat/completions"), PathKind::Chat);
        assert_eq!(classify_path("/v1/chat/completions?x=1"), PathKind::Chat);
        assert_eq!(
            classify_path("/v1/alice/chat/completions"),
            PathKind::ChatForUser("alice".into())
        );
        assert_eq!(
            classify_path("/v1/a%40b.c/chat/completions"),
            PathKind::ChatForUser("a@b.c".into())
        );
        assert_eq!(classify_path("/v1/a/b/chat/completions"), PathKind::Other);
        assert_eq!(classify_path("/v1/user/balance"), PathKind::Other);
        assert_eq!(classify_path("/chat/completions"), PathKind::Other);
    }

    #[test]
    fn bearer_keys() {
        assert_eq!(bearer_key(Some("Bearer pk_1")).unwrap(), "pk_1");
        assert!(bearer_key(None).is_err());
        assert!(bearer_key(Some("Basic abc")).is_err());
        assert!(bearer_key(Some("Bearer   ")).is_err());
    }

    #[test]
    fn users_with_undecodable_bytes_are_invalid() {
        let e = resolve_user(None, Some("al\u{FFFD}ce"), None).unwrap_err();
        assert_eq!(e, UserIdError::Invalid);
        assert_eq!(ApiError::from(e).code.as_deref(), Some("invalid_user"));
    }

    #[test]
    fn users_must_agree() {
        assert_eq!(resolve_user(None, Some("u"), Some("u")).unwrap(), "u");
        assert_eq!(resolve_user(Some("p"), None, None).unwrap(), "p");
        let e = resolve_user(Some("a"), None, Some("b")).unwrap_err();
        assert!(matches!(e, UserIdError::Conflicting { place: "body", .. }));
        assert_eq!(ApiError::from(e).code.as_deref(), Some("conflicting_user"));
        let e = resolve_user(None, None, None).unwrap_err();
        assert_eq!(ApiError::from(e).code.as_deref(), Some("missing_user"));
        assert_eq!(
            resolve_user(None, Some(""), None),
            Err(UserIdError::Invalid)
        );
    }
}
