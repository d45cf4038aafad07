//! Reads a provider response as it passes through, without holding it back:
//! a JSON body is copied (bounded) to read its `usage` at the end; an SSE
//! stream goes through the incremental parser and the meter chunk by chunk.
//! When the filter forced `stream_options.include_usage` on a client that did
//! not ask for it, the usage-only event is cut out of the bytes forwarded; to
//! do that, only the bytes of an event still incomplete at the end of a chunk
//! wait for the next chunk.
//!
//! With `hold_end` (the filter's `settle_before_release`) the end of the
//! response is held back until the end of the stream, where the filter waits
//! for the sidecar to acknowledge the charge: the last byte of a JSON body,
//! and a stream's usage event and `[DONE]` (a client is not done before them).

use tollgate_protocol::Usage;

use crate::sse::SseParser;
use crate::stream_meter::{EventKind, StreamMeter};
use crate::tokens::TextCounter;
use crate::usage::read_json_response;

/// Upper bound on a JSON response kept for usage extraction; bytes past it
/// are forwarded but not inspected (usage then falls back to the local count).
const MAX_CAPTURED_JSON: usize = 8 * 1024 * 1024;
/// Upper bound on one SSE event (the meter keeps no more than that per choice).
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What a finished (or interrupted) response told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub provider_usage: Option<Usage>,
    pub local_completion_tokens: u32,
    /// The response ended properly: a JSON body, or a stream that carried a
    /// finish reason or `[DONE]` (false: the provider cut it).
    pub ended_properly: bool,
    /// SSE only: a provider error object arrived mid-stream.
    pub error: Option<String>,
}

#[derive(Debug)]
pub enum ResponseReader {
    Json(JsonReader),
    Sse(Box<SseReader>),
}

#[derive(Debug)]
pub struct JsonReader {
    captured: Vec<u8>,
    overflow: bool,
    hold_end: bool,
    /// The last byte seen, not yet forwarded (with `hold_end`).
    last: Option<u8>,
}

#[derive(Debug)]
pub struct SseReader {
    parser: SseParser,
    meter: StreamMeter,
    hide_usage: bool,
    hold_end: bool,
    /// Stream offset of the usage event or `[DONE]`, whichever came first
    /// (with `hold_end`): from there on, bytes wait for the end.
    end_from: Option<u64>,
    /// Bytes not yet forwarded: an incomplete event, or the end of the stream.
    held: Vec<u8>,
    /// Stream offset of `held[0]`.
    held_start: u64,
    /// Stream offsets of usage events to cut, not yet past.
    drops: Vec<(u64, u64)>,
}

impl ResponseReader {
    /// `hold_end`: keep the last byte back until the end of the body.
    pub fn json(hold_end: bool) -> Self {
        ResponseReader::Json(JsonReader {
            captured: Vec::new(),
            overflow: false,
            hold_end,
            last: None,
        })
    }

    /// `hide_usage`: cut the usage-only event out of what the client receives.
    /// `hold_end`: keep the usage event and `[DONE]` back until the end.
    pub fn sse(hide_usage: bool, hold_end: bool) -> Self {
        ResponseReader::Sse(Box::new(SseReader {
            parser: SseParser::new(MAX_EVENT_BYTES),
            meter: StreamMeter::new(),
            hide_usage,
            hold_end,
            end_from: None,
            held: Vec::new(),
            held_start: 0,
            drops: Vec::new(),
        }))
    }

    /// Takes the next chunk (a stream's text is counted with `counter` as it
    /// comes). Returns the bytes to forward instead of the chunk when they
    /// differ from it.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        counter: &dyn TextCounter,
    ) -> Option<Vec<u8>> {
        match self {
            ResponseReader::Json(r) => r.feed(chunk, end_of_stream),
            ResponseReader::Sse(r) => r.feed(chunk, end_of_stream, counter),
        }
    }

    pub fn reading(&self, counter: &dyn TextCounter) -> Reading {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match self {
            ResponseReader::Json(JsonReader { captured, .. }) => {
                let r = read_json_response(captured);
                Reading {
                    provider_usage: r.provider_usage,
                    local_completion_tokens: clamp(counter.count(&r.completion_text)),
                    ended_properly: true,
                    error: None,
                }
            }
            ResponseReader::Sse(r) => Reading {
                provider_usage: r.meter.provider_usage(),
                local_completion_tokens: clamp(r.meter.local_completion_tokens(counter)),
                ended_properly: r.meter.ended_properly(),
                error: r.meter.error().map(str::to_string),
            },
        }
    }
}

impl JsonReader {
    fn feed(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        if !self.overflow {
            if self.captured.len() + chunk.len() > MAX_CAPTURED_JSON {
                self.overflow = true;
                self.captured.clear();
            } else {
                self.captured.extend_from_slice(chunk);
            }
        }
        if !self.hold_end || (chunk.is_empty() && !end_of_stream) {
            return None;
        }
        let mut out = Vec::with_capacity(chunk.len() + 1);
        out.extend(self.last.take());
        out.extend_from_slice(chunk);
        if !end_of_stream {
            self.last = out.pop();
        }
        (out.as_slice() != chunk).then_some(out)
    }
}

impl SseReader {
    fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        counter: &dyn TextCounter,
    ) -> Option<Vec<u8>> {
        let chunk_start = self.parser.offset();
        for event in self.parser.push(chunk) {
            let kind = self.meter.observe(&event, counter);
            if kind == EventKind::UsageOnly && self.hide_usage {
                self.drops.push((event.start, event.end));
            }
            let ends = matches!(kind, EventKind::UsageOnly | EventKind::Done);
            if ends && self.hold_end && self.end_from.is_none() {
                self.end_from = Some(event.start);
            }
        }
        if !self.hide_usage && !self.hold_end {
            return None;
        }
        // Everything not yet forwarded, as one run of stream offsets.
        let start = if self.held.is_empty() {
            chunk_start
        } else {
            self.held_start
        };
        let mut pending = std::mem::take(&mut self.held);
        pending.extend_from_slice(chunk);
        let end = start + pending.len() as u64;
        // An incomplete event waits for its end (the client could not use it
        // before), and the end of the stream for the end (unless it is over).
        let incomplete = self.parser.pending_start();
        let keep_from = match incomplete.into_iter().chain(self.end_from).min() {
            Some(p) if !end_of_stream => p.clamp(start, end),
            _ => end,
        };
        let mut out = Vec::with_capacity(pending.len());
        for (i, b) in pending.iter().enumerate() {
            let at = start + i as u64;
            if at >= keep_from {
                self.held.push(*b);
            } else if !self.drops.iter().any(|(s, e)| (*s..*e).contains(&at)) {
                out.push(*b);
            }
        }
        self.held_start = keep_from;
        // What was cut is behind us once everything before `keep_from` went.
        self.drops.retain(|(_, e)| *e > keep_from);
        if self.held.is_empty() && out.as_slice() == chunk {
            None
        } else {
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::ByteCounter;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n",
        "data: [DONE]\n\n",
    );

    fn forwarded(reader: &mut ResponseReader, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            match reader.feed(c, last, &ByteCounter) {
                Some(replacement) => out.extend(replacement),
                None => out.extend_from_slice(c),
            }
        }
        out
    }

    fn without_usage() -> String {
        STREAM.replace(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n",
            "",
        )
    }

    #[test]
    fn usage_chunk_is_cut_for_every_split_and_still_metered() {
        let bytes = STREAM.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut r = ResponseReader::sse(true, false);
                let out = forwarded(&mut r, &[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    without_usage(),
                    "split {i}/{j}"
                );
                let reading = r.reading(&ByteCounter);
                assert_eq!(reading.provider_usage.map(|u| u.completion_tokens), Some(1));
                assert!(reading.ended_properly);
                assert_eq!(reading.local_completion_tokens, 2);
            }
        }
    }

    #[test]
    fn without_hiding_the_stream_passes_untouched() {
        let mut r = ResponseReader::sse(false, false);
        let bytes = STREAM.as_bytes();
        for c in bytes.chunks(7) {
            assert_eq!(r.feed(c, false, &ByteCounter), None);
        }
        assert!(r.reading(&ByteCounter).ended_properly);
    }

    #[test]
    fn a_stream_cut_mid_event_forwards_what_it_has_at_the_end() {
        let mut r = ResponseReader::sse(true, false);
        let out = forwarded(
            &mut r,
            &[b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"cho"],
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"cho"
        );
        assert!(!r.reading(&ByteCounter).ended_properly);
    }

    /// What the client has before the last chunk, and in all.
    fn before_and_after_end(reader: &mut ResponseReader, chunks: &[&[u8]]) -> (String, String) {
        let (head, last) = chunks.split_at(chunks.len() - 1);
        let before = forwarded_open(reader, head);
        let mut all = before.clone();
        all.extend(forwarded_open_end(reader, last[0]));
        (
            String::from_utf8_lossy(&before).into_owned(),
            String::from_utf8_lossy(&all).into_owned(),
        )
    }

    fn forwarded_open(reader: &mut ResponseReader, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            match reader.feed(c, false, &ByteCounter) {
                Some(replacement) => out.extend(replacement),
                None => out.extend_from_slice(c),
            }
        }
        out
    }

    fn forwarded_open_end(reader: &mut ResponseReader, chunk: &[u8]) -> Vec<u8> {
        reader
            .feed(chunk, true, &ByteCounter)
            .unwrap_or_else(|| chunk.to_vec())
    }

    #[test]
    fn held_end_keeps_the_usage_event_and_done_back_for_every_split() {
        let bytes = STREAM.as_bytes();
        let usage_at = STREAM.find("data: {\"choices\":[],").unwrap();
        for hide in [false, true] {
            let whole = if hide {
                without_usage()
            } else {
                STREAM.to_string()
            };
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let mut r = ResponseReader::sse(hide, true);
                    let chunks: [&[u8]; 3] = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                    let (before, all) = before_and_after_end(&mut r, &chunks);
                    assert_eq!(all, whole, "hide {hide} split {i}/{j}");
                    assert!(!before.contains("[DONE]"), "hide {hide} split {i}/{j}");
                    assert!(
                        !before.contains("prompt_tokens"),
                        "hide {hide} split {i}/{j}"
                    );
                    assert!(
                        before.is_empty() || before.ends_with("\n\n"),
                        "split {i}/{j}"
                    );
                    // Everything before the end goes as soon as its event is whole.
                    if !hide && j >= usage_at {
                        assert_eq!(before, STREAM[..usage_at], "split {i}/{j}");
                    }
                    assert!(r.reading(&ByteCounter).ended_properly);
                }
            }
        }
    }

    #[test]
    fn held_end_keeps_the_last_byte_of_a_json_body_back() {
        let body = br#"{"choices":[{"message":{"content":"abc"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        for size in [1, 5, body.len()] {
            let chunks: Vec<&[u8]> = body.chunks(size).chain([&b""[..]]).collect();
            let mut r = ResponseReader::json(true);
            let (before, all) = before_and_after_end(&mut r, &chunks);
            assert_eq!(all.as_bytes(), body, "chunks of {size}");
            assert_eq!(
                before.as_bytes(),
                &body[..body.len() - 1],
                "chunks of {size}"
            );
            let reading = r.reading(&ByteCounter);
            assert_eq!(reading.provider_usage.map(|u| u.completion_tokens), Some(2));
        }
    }

    #[test]
    fn json_bodies_are_read_at_the_end() {
        let mut r = ResponseReader::json(false);
        let body = br#"{"choices":[{"message":{"content":"abc"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        for c in body.chunks(5) {
            assert_eq!(r.feed(c, false, &ByteCounter), None);
        }
        let reading = r.reading(&ByteCounter);
        assert_eq!(reading.provider_usage.map(|u| u.completion_tokens), Some(2));
        assert_eq!(reading.local_completion_tokens, 3);
    }
}
