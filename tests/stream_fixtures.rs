#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
//! Property tests of the SSE parser and the stream meter over real recorded
//! provider streams (tests/fixtures/provider-responses, sources in its
//! SOURCES.md): any split of the bytes, at every position or at random points,
//! and CRLF instead of LF, gives the same events and the same metering; the
//! tokens counted delta by delta equal the count of each choice's whole text.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use tollgate_filter::bpe::{Encoding, EncodingName};
use tollgate_filter::sse::{SseEvent, SseParser};
use tollgate_filter::stream_meter::{EventKind, StreamMeter};
use tollgate_filter::usage::push_choice_text;

fn o200k() -> &'static Encoding {
    static E: OnceLock<Encoding> = OnceLock::new();
    E.get_or_init(|| Encoding::load(EncodingName::O200kBase).unwrap())
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provider-responses");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "sse") {
                let name = f.strip_prefix(&root).unwrap().display().to_string();
                out.push((name, std::fs::read(&f).unwrap()));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "fixtures missing");
    out
}

/// Everything observable about a stream: events (data, kind) and the meter's results.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<(Option<String>, String, EventKind)>,
    /// Completion tokens per choice, counted as the deltas came.
    tokens: Vec<(u64, usize)>,
    usage: Option<tollgate_protocol::Usage>,
    done: bool,
    error: Option<String>,
}

fn run(chunks: &[&[u8]]) -> (Outcome, Vec<SseEvent>) {
    let mut parser = SseParser::new(1 << 20);
    let mut meter = StreamMeter::new();
    let mut events = Vec::new();
    let mut raw = Vec::new();
    for c in chunks {
        for e in parser.push(c) {
            let kind = meter.observe(&e, o200k());
            events.push((e.event.clone(), e.data.clone(), kind));
            raw.push(e);
        }
    }
    let outcome = Outcome {
        events,
        tokens: meter.tokens_per_choice(o200k()),
        usage: meter.provider_usage(),
        done: meter.saw_done(),
        error: meter.error().map(str::to_string),
    };
    (outcome, raw)
}

/// Each choice's whole generated text, gathered apart from the meter.
fn whole_texts(events: &[SseEvent]) -> BTreeMap<u64, String> {
    let mut texts: BTreeMap<u64, String> = BTreeMap::new();
    for e in events {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) else {
            continue;
        };
        for choice in v["choices"].as_array().into_iter().flatten() {
            let text = texts
                .entry(choice["index"].as_u64().unwrap_or(0))
                .or_default();
            push_choice_text(text, &choice["delta"]);
        }
    }
    texts.retain(|_, t| !t.is_empty());
    texts
}

#[test]
fn tokens_counted_delta_by_delta_equal_the_whole_text_count() {
    for (name, bytes) in fixtures() {
        let (outcome, events) = run(&[&bytes]);
        let whole: Vec<(u64, usize)> = whole_texts(&events)
            .iter()
            .map(|(i, t)| (*i, o200k().count(t)))
            .collect();
        assert_eq!(outcome.tokens, whole, "{name}");
    }
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// Streams up to this size are also cut in two at every position (O(n²)); the
/// byte-by-byte run below covers every cut of the larger ones at once.
const TWO_WAY_MAX: usize = 16 * 1024;

#[test]
fn every_two_way_split_gives_the_same_result() {
    for (name, bytes) in fixtures()
        .into_iter()
        .filter(|(_, b)| b.len() <= TWO_WAY_MAX)
    {
        let (whole, whole_events) = run(&[&bytes]);
        assert!(!whole.events.is_empty(), "{name}: no events");
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            let (split, split_events) = run(&[a, b]);
            assert_eq!(split, whole, "{name}: split at byte {i}");
            assert_eq!(
                split_events, whole_events,
                "{name}: offsets differ at split {i}"
            );
        }
    }
}

#[test]
fn byte_by_byte_and_random_splits_give_the_same_result() {
    for (name, bytes) in fixtures() {
        let (whole, _) = run(&[&bytes]);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let (one_by_one, one_by_one_events) = run(&singles);
        assert_eq!(one_by_one, whole, "{name}: byte by byte");
        assert_eq!(
            one_by_one_events,
            run(&[&bytes]).1,
            "{name}: offsets byte by byte"
        );
        for seed in 1..=20u64 {
            let mut s = seed;
            let mut cuts: Vec<&[u8]> = Vec::new();
            let mut rest: &[u8] = &bytes;
            while !rest.is_empty() {
                let n = 1 + (lcg(&mut s) as usize % 97).min(rest.len() - 1);
                let (a, b) = rest.split_at(n.min(rest.len()));
                cuts.push(a);
                rest = b;
            }
            assert_eq!(run(&cuts).0, whole, "{name}: random split, seed {seed}");
        }
    }
}

#[test]
fn crlf_streams_meter_like_lf_streams() {
    for (name, bytes) in fixtures() {
        let (lf, _) = run(&[&bytes]);
        let crlf: Vec<u8> = String::from_utf8_lossy(&bytes)
            .replace('\n', "\r\n")
            .into_bytes();
        let (got, _) = run(&[&crlf]);
        assert_eq!(got, lf, "{name}");
    }
}

#[test]
fn recorded_streams_are_metered_as_expected() {
    let all = fixtures();
    let get = |n: &str| run(&[&all.iter().find(|(name, _)| name == n).unwrap().1]).0;
    // OpenAI with include_usage: text, a usage-only chunk, [DONE].
    let s = get("openai/stream-tool-call-usage.sse");
    assert!(s.done);
    assert!(s.usage.is_some_and(|u| u.completion_tokens > 0));
    assert!(s.events.iter().any(|(_, _, k)| *k == EventKind::UsageOnly));
    assert!(s.tokens[0].1 > 0, "{:?}", s.tokens);
    // No usage requested: none found, the text is still counted.
    let s = get("openai/stream-text-no-usage.sse");
    assert_eq!(s.usage, None);
    assert!(!s.tokens.is_empty() && s.tokens[0].1 > 0);
    // n = 3 choices are kept apart.
    let s = get("openai/stream-json-schema-n3-choices.sse");
    assert_eq!(s.tokens.len(), 3);
    // A provider error in the middle of the stream is seen.
    let s = get("openrouter/stream-error-midstream.sse");
    assert_eq!(s.error.as_deref(), Some("Token limit reached"));
    // Refusals count as generated text.
    let s = get("openai/stream-refusal-usage.sse");
    assert!(s.tokens[0].1 > 0);
}
