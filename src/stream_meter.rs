//! Meters a streamed chat completion as its events pass: the generated text
//! of every choice (content, refusals, tool-call names and arguments), the
//! provider's usage when it comes (the last one wins: some providers repeat
//! a cumulative usage on every chunk), finish reasons, `[DONE]`, and
//! mid-stream errors. Only the extracted text is kept (bounded), never the
//! raw stream.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_protocol::Usage;

use crate::sse::SseEvent;
use crate::usage::{parse_usage, push_choice_text};

/// What an event was, for the caller deciding what to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A chunk with choices (possibly also carrying usage).
    Chunk,
    /// A chunk with no choices and a usage object: the `include_usage` chunk.
    UsageOnly,
    Done,
    /// A chunk carrying an `error` object.
    Error,
    /// Not JSON, or JSON of another shape.
    Other,
}

#[derive(Debug, Default)]
pub struct StreamMeter {
    texts: BTreeMap<u64, String>,
    text_bytes: usize,
    max_text_bytes: usize,
    truncated: bool,
    provider_usage: Option<Usage>,
    done: bool,
    /// A choice carried a `finish_reason`.
    finished: bool,
    error: Option<String>,
}

impl StreamMeter {
    pub fn new(max_text_bytes: usize) -> Self {
        StreamMeter {
            max_text_bytes,
            ..Default::default()
        }
    }

    pub fn observe(&mut self, event: &SseEvent) -> EventKind {
        if event.is_done() {
            self.done = true;
            return EventKind::Done;
        }
        let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
            return EventKind::Other;
        };
        if let Some(u) = v.get("usage").and_then(parse_usage) {
            self.provider_usage = Some(u);
        }
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            self.error = Some(message.to_string());
        }
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
                self.finished = true;
            }
            if let Some(delta) = choice.get("delta") {
                let mut piece = String::new();
                push_choice_text(&mut piece, delta);
                self.append(index, &piece);
            }
        }
        let has_error = v.get("error").is_some_and(|e| !e.is_null());
        let has_usage = v.get("usage").is_some_and(|u| !u.is_null());
        match choices {
            _ if has_error => EventKind::Error,
            Some(c) if !c.is_empty() => EventKind::Chunk,
            _ if has_usage => EventKind::UsageOnly,
            Some(_) => EventKind::Chunk,
            None => EventKind::Other,
        }
    }

    fn append(&mut self, index: u64, piece: &str) {
        if piece.is_empty() {
            return;
        }
        if self.text_bytes + piece.len() > self.max_text_bytes {
            self.truncated = true;
            return;
        }
        self.text_bytes += piece.len();
        self.texts.entry(index).or_default().push_str(piece);
    }

    /// The provider's usage, if any chunk carried one.
    pub fn provider_usage(&self) -> Option<Usage> {
        self.provider_usage
    }

    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// The stream ended as a stream should: `[DONE]` or a finish reason came.
    pub fn ended_properly(&self) -> bool {
        self.done || self.finished
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// True when text was dropped for exceeding the bound (the count is then a floor).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The generated text of each choice, by choice index.
    pub fn texts(&self) -> &BTreeMap<u64, String> {
        &self.texts
    }

    /// Completion tokens counted locally: each choice's text tokenized whole
    /// (tokenizing deltas one by one would over-count at their seams).
    pub fn local_completion_tokens(&self, count: impl Fn(&str) -> usize) -> usize {
        self.texts.values().map(|t| count(t)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    fn meter(stream: &str) -> (StreamMeter, Vec<EventKind>) {
        let mut m = StreamMeter::new(1 << 20);
        let kinds = SseParser::new(1 << 20)
            .push(stream.as_bytes())
            .iter()
            .map(|e| m.observe(e))
            .collect();
        (m, kinds)
    }

    #[test]
    fn collects_text_per_choice_and_the_usage_chunk() {
        let (m, kinds) = meter(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}},{\"index\":1,\"delta\":{\"content\":\"Bye\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        ));
        assert_eq!(
            kinds,
            [
                EventKind::Chunk,
                EventKind::Chunk,
                EventKind::Chunk,
                EventKind::UsageOnly,
                EventKind::Done
            ]
        );
        assert_eq!(m.texts().get(&0).map(String::as_str), Some("Hello"));
        assert_eq!(m.texts().get(&1).map(String::as_str), Some("Bye"));
        assert_eq!(m.provider_usage().map(|u| u.completion_tokens), Some(3));
        assert!(m.saw_done());
        assert!(m.ended_properly());
        assert_eq!(m.local_completion_tokens(|t| t.len()), 8);
    }

    #[test]
    fn tool_call_arguments_and_refusals_count() {
        let (m, _) = meter(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"refusal\":\"No.\"}}]}\n\n",
        ));
        assert_eq!(m.texts().get(&0).map(String::as_str), Some("f{\"a\":1}"));
        assert_eq!(m.texts().get(&1).map(String::as_str), Some("No."));
        assert!(!m.saw_done());
        assert!(!m.ended_properly(), "no finish reason, no [DONE]: cut");
        assert_eq!(m.provider_usage(), None);
    }

    #[test]
    fn a_finish_reason_without_done_ends_properly() {
        let (m, _) = meter(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        );
        assert!(!m.saw_done());
        assert!(m.ended_properly());
    }

    #[test]
    fn errors_mid_stream_are_seen() {
        let (m, kinds) =
            meter("data: {\"error\":{\"message\":\"Token limit reached\"},\"choices\":[]}\n\n");
        assert_eq!(kinds, [EventKind::Error]);
        assert_eq!(m.error(), Some("Token limit reached"));
    }

    #[test]
    fn text_is_bounded() {
        let mut m = StreamMeter::new(4);
        let e = |s: &str| SseEvent {
            event: None,
            data: format!("{{\"choices\":[{{\"delta\":{{\"content\":\"{s}\"}}}}]}}"),
            start: 0,
            end: 0,
        };
        m.observe(&e("abc"));
        m.observe(&e("defg"));
        assert_eq!(m.texts().get(&0).map(String::as_str), Some("abc"));
        assert!(m.truncated());
    }
}
