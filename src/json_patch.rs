//! Changes to a request body made on its bytes: a top-level member's value
//! is replaced (every occurrence, should the key repeat) or the member is
//! appended after the last one. Key order, spacing, number spelling and
//! fields we do not know reach the provider exactly as the client sent them;
//! serde_json's `RawValue` gives each member's span in one pass.

use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level members of a JSON object, in order, with the byte span of
/// each value: scanned once, then read and changed by key.
pub struct Members<'a> {
    body: &'a [u8],
    members: Vec<(String, Range<usize>)>,
    /// Where a new member goes: after the last value, or after `{`.
    append_at: usize,
}

struct RawMembers<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Collect;
        impl<'de> Visitor<'de> for Collect {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(RawMembers(members))
            }
        }
        d.deserialize_map(Collect)
    }
}

impl<'a> Members<'a> {
    /// None if `body` is not a JSON object.
    pub fn scan(body: &'a [u8]) -> Option<Members<'a>> {
        let RawMembers(raw) = serde_json::from_slice(body).ok()?;
        let base = body.as_ptr() as usize;
        let mut members = Vec::with_capacity(raw.len());
        for (key, value) in raw {
            // The value borrows from `body`: its offset is where it sits in it.
            let text = value.get();
            let start = (text.as_ptr() as usize).checked_sub(base)?;
            let end = start.checked_add(text.len())?;
            if end > body.len() {
                return None;
            }
            members.push((key, start..end));
        }
        let append_at = match members.last() {
            Some((_, span)) => span.end,
            None => body.iter().position(|b| *b == b'{')?.checked_add(1)?,
        };
        Some(Members {
            body,
            members,
            append_at,
        })
    }

    /// The raw JSON text of `key`'s value (its last occurrence, as a parser
    /// keeping the last duplicate reads it).
    pub fn value(&self, key: &str) -> Option<&'a [u8]> {
        let (_, span) = self.members.iter().rev().find(|(k, _)| k == key)?;
        self.body.get(span.clone())
    }

    /// The body with each `(key, json)` set: the value replaced where the key
    /// is, else the member appended. `json` must be one JSON value.
    pub fn set(&self, edits: &[(&str, &str)]) -> Option<Vec<u8>> {
        let body = self.body;
        // (where, how many bytes it replaces, what goes there), in body order.
        let mut splices: Vec<(usize, usize, String)> = Vec::new();
        let mut appended = String::new();
        let mut count = self.members.len();
        for (key, json) in edits {
            let mut found = false;
            for (_, span) in self.members.iter().filter(|(k, _)| k == key) {
                splices.push((span.start, span.len(), (*json).to_string()));
                found = true;
            }
            if !found {
                if count > 0 {
                    appended.push(',');
                }
                appended.push_str(&serde_json::to_string(key).ok()?);
                appended.push(':');
                appended.push_str(json);
                count += 1;
            }
        }
        if !appended.is_empty() {
            splices.push((self.append_at, 0, appended));
        }
        splices.sort_by_key(|(at, _, _)| *at);
        let extra: usize = splices.iter().map(|(_, _, s)| s.len()).sum();
        let mut out = Vec::with_capacity(body.len() + extra);
        let mut at = 0;
        for (start, len, text) in splices {
            out.extend_from_slice(body.get(at..start)?);
            out.extend_from_slice(text.as_bytes());
            at = start.checked_add(len)?;
        }
        out.extend_from_slice(body.get(at..)?);
        Some(out)
    }
}

/// `body` with each `(key, json)` set (see [`Members::set`]). None if `body`
/// is not a JSON object.
pub fn set_members(body: &[u8], edits: &[(&str, &str)]) -> Option<Vec<u8>> {
    Members::scan(body)?.set(edits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn text(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.unwrap()).unwrap()
    }

    #[test]
    fn a_value_is_replaced_in_place_and_the_rest_kept_byte_for_byte() {
        let body = br#"{ "z": 1.50, "model" : "a",  "x":{"y":[1,2]} , "n":1e3 }"#;
        let out = text(set_members(body, &[("model", "\"b\"")]));
        assert_eq!(
            out,
            r#"{ "z": 1.50, "model" : "b",  "x":{"y":[1,2]} , "n":1e3 }"#
        );
    }

    #[test]
    fn a_missing_member_is_appended_after_the_last_one() {
        let out = text(set_members(
            br#"{"b":1, "a":[true] }"#,
            &[("max_tokens", "7")],
        ));
        assert_eq!(out, r#"{"b":1, "a":[true],"max_tokens":7 }"#);
        let out = text(set_members(b" { } ", &[("k", "1"), ("j", "\"x\"")]));
        assert_eq!(out, r#" {"k":1,"j":"x" } "#);
    }

    #[test]
    fn several_edits_and_repeated_keys_apply_together() {
        let body = br#"{"model":"a","max_tokens":9,"model":"c","s":"\"model\""}"#;
        let out = text(set_members(
            body,
            &[("model", "\"m\""), ("max_tokens", "3"), ("new", "{}")],
        ));
        assert_eq!(
            out,
            r#"{"model":"m","max_tokens":3,"model":"m","s":"\"model\"","new":{}}"#
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn members_are_read_by_key_with_escapes_and_nesting() {
        let body = br#"{"a\u0062":{"c":"}"},"ab":2}"#;
        assert_eq!(Members::scan(body).unwrap().value("ab"), Some(&b"2"[..]));
        let nested = br#"{"a":{"ab":1}}"#;
        assert_eq!(Members::scan(nested).unwrap().value("ab"), None);
    }

    #[test]
    fn what_is_not_an_object_is_refused() {
        for body in [&b"[1]"[..], b"\"s\"", b"{", b"", b"{\"a\":}"] {
            assert!(set_members(body, &[("a", "1")]).is_none(), "{body:?}");
        }
    }
}
