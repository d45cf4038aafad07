//! The properties each fuzz target checks, one function per target. They
//! panic on a violation; libFuzzer reports the input, which then goes into
//! `fuzz/regressions/<target>/` and is replayed by `make test` for good.

use std::sync::OnceLock;

use serde_json::Value;
use tollgate_filter::chat_request::{force_include_usage, limit_output, ChatRequest};
use tollgate_filter::request_identity::{bearer_key, classify_path, resolve_user};
use tollgate_filter::response_reader::ResponseReader;
use tollgate_filter::sse::{SseEvent, SseParser};
use tollgate_filter::tokens::{ByteCounter, EncodingName, ModelEncodings, Tokenizers};
use tollgate_filter::usage::{parse_usage, read_json_response};
use tollgate_protocol::pricing::PriceRule;
use tollgate_protocol::{format_micros, parse_decimal};

fn tokenizers() -> &'static Tokenizers {
    static T: OnceLock<Tokenizers> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase)).expect("tokenizers")
    })
}

/// Split points taken from the input's first bytes; the rest is the payload.
fn split(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 8).min(rest.len());
    let (seeds, payload) = rest.split_at(n);
    let mut cuts: Vec<usize> = seeds
        .iter()
        .map(|&s| usize::from(s) * payload.len() / 256)
        .collect();
    cuts.sort_unstable();
    (cuts, payload)
}

fn pieces<'a>(payload: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        out.push(&payload[at..c]);
        at = c;
    }
    out.push(&payload[at..]);
    out
}

fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut parser = SseParser::new(4096);
    chunks.iter().flat_map(|c| parser.push(c)).collect()
}

/// The SSE parser gives the same events however the bytes are split, and the
/// reader forwards the same bytes (usage hidden or not) however they are split.
pub fn sse_parser(data: &[u8]) {
    let (cuts, payload) = split(data);
    let whole = parse_all(&[payload]);
    let split_events = parse_all(&pieces(payload, &cuts));
    assert_eq!(whole, split_events, "events depend on the split");
    for e in &whole {
        assert!(e.start <= e.end && e.end <= payload.len() as u64);
    }
    // The real tokenizer: counting delta by delta must not depend on the split.
    let counter = tokenizers().counter("gpt-4o");
    for hide in [false, true] {
        // Holding the end back (settle_before_release) only delays bytes.
        let mut unheld = None;
        for hold_end in [false, true] {
            let forwarded = |chunks: &[&[u8]]| -> (Vec<u8>, u32) {
                let mut reader = ResponseReader::sse(hide, hold_end);
                let mut out = Vec::new();
                for (i, c) in chunks.iter().enumerate() {
                    match reader.feed(c, i + 1 == chunks.len(), counter) {
                        Some(replaced) => out.extend(replaced),
                        None => out.extend_from_slice(c),
                    }
                }
                let count = reader.reading(counter).local_completion_tokens;
                (out, count)
            };
            let a = forwarded(&[payload]);
            let b = forwarded(&pieces(payload, &cuts));
            assert_eq!(
                a, b,
                "forwarded bytes or count depend on the split (hide={hide}, hold_end={hold_end})"
            );
            if !hide {
                assert_eq!(a.0, payload, "without hiding, the stream passes unchanged");
            }
            if let Some(unheld) = &unheld {
                assert_eq!(&a, unheld, "holding the end changed what is forwarded");
            }
            unheld = Some(a);
        }
    }
}

/// Request bodies: parsing never panics; what it accepts can be counted, and
/// the filter's rewrites keep the body valid JSON with the intended change.
pub fn request_body(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = classify_path(text);
        let _ = bearer_key(Some(text));
        let mut parts = text.splitn(3, '\n');
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        if let Ok(user) = resolve_user(a, b, c) {
            assert!(!user.is_empty() && user.len() <= 256);
        }
    }
    let Ok(chat) = ChatRequest::parse(data) else {
        return;
    };
    assert!((1..=128).contains(&chat.n));
    let _ = tokenizers().count_prompt(&chat);
    if let Some(rewritten) = force_include_usage(data) {
        let v: Value = serde_json::from_slice(&rewritten).expect("rewritten body is JSON");
        assert_eq!(v["stream_options"]["include_usage"], Value::Bool(true));
        let again = ChatRequest::parse(&rewritten).expect("still a chat request");
        assert_eq!(again.model, chat.model);
    }
    if let Some(limited) = limit_output(data, 7) {
        let again = ChatRequest::parse(&limited).expect("still a chat request");
        assert_eq!(again.max_output_tokens, Some(7));
    }
}

/// Provider responses: usage and text extraction never panic and agree
/// between the JSON reader and the direct parser.
pub fn usage_extraction(data: &[u8]) {
    let direct = read_json_response(data);
    let mut reader = ResponseReader::json(false);
    let (cuts, _) = split(data);
    for c in pieces(data, &cuts) {
        assert!(
            reader.feed(c, false, &ByteCounter).is_none(),
            "JSON responses are never rewritten"
        );
    }
    // Holding the last byte back (settle_before_release) only delays it.
    let mut held = ResponseReader::json(true);
    let mut out = Vec::new();
    let chunks = pieces(data, &cuts);
    for (i, c) in chunks.iter().enumerate() {
        match held.feed(c, i + 1 == chunks.len(), &ByteCounter) {
            Some(replaced) => out.extend(replaced),
            None => out.extend_from_slice(c),
        }
    }
    assert_eq!(out, data, "the held body differs from the provider's");
    let via_reader = reader.reading(&ByteCounter);
    assert_eq!(via_reader.provider_usage, direct.provider_usage);
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = parse_usage(&v);
        let _ = parse_usage(&v["usage"]);
    }
}

fn take_u64(data: &mut &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    u64::from_le_bytes(b)
}

/// Prices: never negative, never below the minimum, monotonic in every token
/// count, saturating instead of wrapping; the affordability search returns
/// the largest output that fits; amounts format and parse back exactly.
pub fn price_arithmetic(data: &[u8]) {
    let mut d = data;
    let price = |d: &mut &[u8]| (take_u64(d) >> (take_u64(d) % 64)) as i64;
    let rule = PriceRule {
        id: "m@v1".into(),
        model: "m".into(),
        version: 1,
        input_per_m: price(&mut d),
        cached_input_per_m: price(&mut d),
        output_per_m: price(&mut d),
        markup_bps: (take_u64(&mut d) % (u64::from(u32::MAX) + 1)) as i64,
        min_charge: price(&mut d) >> 20,
    };
    let tokens = |d: &mut &[u8]| take_u64(d) >> (take_u64(d) % 64);
    let (p, c, o) = (tokens(&mut d), tokens(&mut d), tokens(&mut d));
    let cost = rule.cost(p, c, o);
    assert!(cost >= 0 && cost >= rule.min_charge);
    let provider_cost = rule.provider_cost(p, c, o);
    assert!(
        (0..=cost).contains(&provider_cost),
        "the provider's share is never above the price"
    );
    assert!(rule.cost(p, c, o.saturating_add(1)) >= cost);
    assert!(rule.cost(p.saturating_add(1), c, o) >= cost);
    if rule.cached_input_per_m <= rule.input_per_m {
        assert!(
            rule.max_cost(p, o) >= cost,
            "caching can only make it cheaper"
        );
    }

    let budget = (take_u64(&mut d) >> (take_u64(&mut d) % 64)) as i64;
    let choices = take_u64(&mut d) % 129;
    if let Some(k) = rule.affordable_output(p, choices, o, budget) {
        assert!(k <= o);
        assert!(rule.max_cost(p, k.saturating_mul(choices)) <= budget);
        if k < o {
            let more = rule.max_cost(p, (k + 1).saturating_mul(choices));
            assert!(
                more > budget || choices == 0,
                "a larger output would have fitted"
            );
        }
    } else {
        assert!(rule.max_cost(p, 0) > budget);
    }

    let micros = cost;
    assert_eq!(parse_decimal(&format_micros(micros)), Ok(micros));
    if let Ok(text) = std::str::from_utf8(d) {
        if let Ok(v) = parse_decimal(text) {
            assert!(v >= 0);
            assert_eq!(parse_decimal(&format_micros(v)), Ok(v));
        }
    }
}
