//! The words the ledger records for a request's life, as enums: each has one
//! spelling, the same on the wire (serde) and in the database (`as_str`,
//! `parse`), so no code compares strings.

use serde::{Deserialize, Serialize};

/// Gives an enum its text: `as_str`, `parse` (None for an unknown word) and
/// `Display`, from one table of variants and words.
macro_rules! words {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::states::UnknownWord;

            fn try_from(text: String) -> Result<$name, $crate::states::UnknownWord> {
                $name::parse(&text).ok_or($crate::states::UnknownWord(text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use words;

/// A stored or received word that names no variant (`TryFrom<String>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord(pub String);

impl std::fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown word {:?}", self.0)
    }
}

impl std::error::Error for UnknownWord {}

/// Where a hold is in its two-phase life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Money reserved; waiting for its settlement.
    Pending,
    /// Settled: the charge was posted and the rest released.
    Posted,
    /// Released in full: nothing was charged.
    Voided,
}

words!(HoldState { Pending => "pending", Posted => "posted", Voided => "voided" });

/// Whose key a request goes out with; decides the accounting (README, "Whose
/// key pays"): under `Byok` the provider bills the paywall's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The paywall's own key (bring your own key).
    Byok,
    /// The operator's key, or none for a self-hosted provider without auth.
    BuiltIn,
}

words!(KeySource { Byok => "byok", BuiltIn => "built_in" });

/// Whose wallet a paywall's users spend from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaywallMode {
    /// One wallet per paywall and user; no consent step.
    Isolated,
    /// One wallet per user across shared paywalls, after the user's consent.
    Shared,
}

words!(PaywallMode { Isolated => "isolated", Shared => "shared" });

/// What a link shown to an end user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LinkPurpose {
    /// Add funds (the top-up page).
    Topup,
    /// Shared mode: let a paywall charge the user's shared wallet.
    Consent,
}

words!(LinkPurpose { Topup => "topup", Consent => "consent" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_round_trips_through_text_and_serde() {
        for s in HoldState::ALL {
            assert_eq!(HoldState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in KeySource::ALL {
            assert_eq!(KeySource::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in PaywallMode::ALL {
            assert_eq!(PaywallMode::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in LinkPurpose::ALL {
            assert_eq!(LinkPurpose::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(HoldState::parse("expired"), None);
        assert_eq!(
            HoldState::try_from("voided".to_string()),
            Ok(HoldState::Voided)
        );
        assert!(KeySource::try_from("nobody".to_string()).is_err());
    }
}
