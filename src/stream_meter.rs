//! Meters a streamed chat completion as its events pass: the generated text
//! of every choice (content, refusals, tool-call names and arguments), the
//! provider's usage when it comes (the last one wins: some providers repeat
//! a cumulative usage on every chunk), finish reasons, `[DONE]`, and
//! mid-stream errors. The text is counted as it arrives (`running_count`):
//! only each choice's last pieces are kept, never the stream.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_protocol::Usage;

use crate::running_count::RunningCount;
use crate::sse::SseEvent;
use crate::tokens::TextCounter;
use crate::usage::{parse_usage, push_choice_text};

/// Choices counted one by one (OpenAI's `n` is at most 128); text of choices
/// past that is counted delta by delta (a slight over-count), so a provider
/// inventing choice indices cannot make the meter grow without bound.
const MAX_CHOICES: usize = 128;

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
    choices: BTreeMap<u64, RunningCount>,
    /// Tokens of the deltas of choices past `MAX_CHOICES`.
    uncounted_choices: usize,
    provider_usage: Option<Usage>,
    done: bool,
    /// A choice carried a `finish_reason`.
    finished: bool,
    error: Option<String>,
}

impl StreamMeter {
    pub fn new() -> Self {
        StreamMeter::default()
    }

    pub fn observe(&mut self, event: &SseEvent, counter: &dyn TextCounter) -> EventKind {
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
                self.append(index, &piece, counter);
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

    fn append(&mut self, index: u64, piece: &str, counter: &dyn TextCounter) {
        if piece.is_empty() {
            return;
        }
        if self.choices.len() >= MAX_CHOICES && !self.choices.contains_key(&index) {
            self.uncounted_choices += counter.count(piece);
            return;
        }
        self.choices.entry(index).or_default().push(piece, counter);
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

    /// Completion tokens counted locally: each choice's text as if tokenized
    /// whole (tokenizing deltas one by one would over-count at their seams).
    pub fn local_completion_tokens(&self, counter: &dyn TextCounter) -> usize {
        let counted: usize = self.choices.values().map(|c| c.total(counter)).sum();
        counted + self.uncounted_choices
    }

    /// Completion tokens counted so far, per choice index.
    pub fn tokens_per_choice(&self, counter: &dyn TextCounter) -> Vec<(u64, usize)> {
        self.choices
            .iter()
            .map(|(i, c)| (*i, c.total(counter)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::bpe::{Encoding, EncodingName};
    use crate::sse::SseParser;
    use crate::tokens::ByteCounter;

    fn o200k() -> &'static Encoding {
        static E: OnceLock<Encoding> = OnceLock::new();
        E.get_or_init(|| Encoding::load(EncodingName::O200kBase).unwrap())
    }

    fn meter(stream: &str) -> (StreamMeter, Vec<EventKind>) {
        let mut m = StreamMeter::new();
        let kinds = SseParser::new(1 << 20)
            .push(stream.as_bytes())
            .iter()
            .map(|e| m.observe(e, o200k()))
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
        // "Hel" + "lo" counts as "Hello" (one token), not as two deltas.
        assert_eq!(m.tokens_per_choice(o200k()), [(0, 1), (1, 1)]);
        assert_eq!(m.provider_usage().map(|u| u.completion_tokens), Some(3));
        assert!(m.saw_done());
        assert!(m.ended_properly());
        assert_eq!(m.local_completion_tokens(&ByteCounter), 8);
    }

    #[test]
    fn tool_call_arguments_and_refusals_count() {
        let (m, _) = meter(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"refusal\":\"No.\"}}]}\n\n",
        ));
        let f_args = o200k().count("f{\"a\":1}");
        assert_eq!(m.tokens_per_choice(o200k()), [(0, f_args), (1, 2)]);
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
    fn invented_choice_indices_do_not_grow_the_meter() {
        let mut m = StreamMeter::new();
        let e = |i: usize| SseEvent {
            event: None,
            data: format!("{{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"abc\"}}}}]}}"),
            start: 0,
            end: 0,
        };
        for i in 0..10_000 {
            m.observe(&e(i), &ByteCounter);
        }
        assert_eq!(m.tokens_per_choice(&ByteCounter).len(), MAX_CHOICES);
        assert_eq!(m.local_completion_tokens(&ByteCounter), 30_000);
    }
}
