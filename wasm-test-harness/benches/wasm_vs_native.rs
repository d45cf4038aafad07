//! Token counting in the release `.wasm` (run by wasmtime through the
//! harness) against the same code built natively and against tiktoken-rs
//! itself, on one corpus, in one run; plus tokenizer set-up time and memory
//! per VM. Prints a Markdown section for BENCHMARKS.md (`make bench`).

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_filter::chat_request::ChatRequest;
use tollgate_filter::response_reader::ResponseReader;
use tollgate_filter::tokens::{EncodingName, ModelEncodings, Tokenizers};
use tollgate_wasm_test_harness::{CalloutAnswer, Vm};

const TEXT_BYTES: usize = 256 * 1024;
const ROUNDS: usize = 15;
const VMS: usize = 5;

/// The reference-test corpus (prose, code, CJK, emoji), repeated to TEXT_BYTES.
fn corpus() -> String {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/token-corpus.json"
    ))
    .expect("token corpus");
    let items: Vec<serde_json::Value> = serde_json::from_str(&raw).expect("corpus json");
    let mut text = String::new();
    while text.len() < TEXT_BYTES {
        for item in &items {
            text.push_str(item["text"].as_str().unwrap_or_default());
            text.push('\n');
        }
    }
    text
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mb_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

fn config() -> serde_json::Value {
    let mut c = Vm::default_config();
    c["max_body_bytes"] = json!(4 * 1024 * 1024);
    c
}

fn request_body(text: &str) -> Vec<u8> {
    json!({"model": "gpt-4o-mini", "user": "bench",
        "messages": [{"role": "user", "content": text}]})
    .to_string()
    .into_bytes()
}

/// The same text as a provider stream, ~200 bytes of content per event.
fn sse_stream(text: &str) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(200);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": piece}}]});
        events.push(format!("data: {chunk}\n\n").into_bytes());
    }
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

fn allow(hold: &str) -> Vec<u8> {
    json!({"decision": "allow", "hold_id": hold, "held_micros": 1,
        "route": {"provider": "p", "cluster": "c", "auth_header": "authorization",
                  "auth_value": "Bearer k", "upstream_model": null}})
    .to_string()
    .into_bytes()
}

fn headers(len: usize) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/v1/chat/completions".into()),
        ("authorization", "Bearer pk_bench".into()),
        ("content-length", len.to_string()),
        ("x-request-id", "bench".into()),
    ]
}

fn main() {
    let text = corpus();
    let body = request_body(&text);
    let events = sse_stream(&text);
    let n = text.len();

    // Set-up, once per VM.
    let build_native = median(
        (0..VMS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(
                    Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase))
                        .expect("build"),
                );
                t.elapsed()
            })
            .collect(),
    );
    let mut instantiate = Vec::new();
    let mut configure = Vec::new();
    let mut memory = 0;
    for _ in 0..VMS {
        let t = Instant::now();
        let mut vm = Vm::new().expect("vm");
        instantiate.push(t.elapsed());
        let t = Instant::now();
        assert!(vm
            .configure(config().to_string().as_bytes())
            .expect("configure"));
        configure.push(t.elapsed());
        memory = vm.memory_bytes();
    }

    // Throughput: every round measures all five paths back to back, so a
    // noisy moment on the machine hits native and wasm alike.
    let raw = tiktoken_rs::o200k_base().expect("o200k");
    let tokenizers =
        Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase)).expect("build");
    let mut vm = Vm::start(&config()).expect("vm");
    let h = headers(body.len());
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut raw_t, mut native_prompt, mut native_stream) = (Vec::new(), Vec::new(), Vec::new());
    let (mut prompt, mut stream) = (Vec::new(), Vec::new());
    let mut tokens = 0;
    for round in 0..ROUNDS + 1 {
        let t = Instant::now();
        std::hint::black_box(raw.encode_ordinary(&text).len());
        let t_raw = t.elapsed();

        let t = Instant::now();
        let chat = ChatRequest::parse(&body).expect("parse");
        std::hint::black_box(tokenizers.count_prompt(&chat));
        let t_native_prompt = t.elapsed();

        let t = Instant::now();
        let counter = tokenizers.counter("gpt-4o-mini");
        let mut reader = ResponseReader::sse(false, false);
        for (i, e) in events.iter().enumerate() {
            std::hint::black_box(reader.feed(e, i == events.len() - 1, counter));
        }
        std::hint::black_box(reader.reading(counter));
        let t_native_stream = t.elapsed();

        let s = vm.open().expect("open");
        vm.request_headers(s, &h, false).expect("headers");
        let t = Instant::now();
        vm.request_body(s, &body, true).expect("body");
        let took = t.elapsed();
        let asked = vm.pending().last().expect("authorize callout").clone();
        tokens = asked.json()["prompt_tokens"].as_u64().unwrap_or(0);
        vm.answer(asked.token, CalloutAnswer::Status(200, &allow("h")))
            .expect("allow");
        vm.response_headers(
            s,
            &[(":status", "200"), ("content-type", "text/event-stream")],
            false,
        )
        .expect("response headers");
        let t = Instant::now();
        for (i, e) in events.iter().enumerate() {
            vm.response_body(s, e, i == events.len() - 1)
                .expect("chunk");
        }
        let streamed = t.elapsed();
        vm.close(s).expect("close");
        vm.advance(200).expect("tick");
        for c in vm.pending() {
            vm.answer(c.token, CalloutAnswer::Status(200, b"{}"))
                .expect("ack");
        }
        if round > 0 {
            // The first round warms caches; it is not counted.
            raw_t.push(t_raw);
            native_prompt.push(t_native_prompt);
            native_stream.push(t_native_stream);
            prompt.push(took);
            stream.push(streamed);
        }
    }
    let (t_raw, t_native_prompt, t_native_stream) =
        (median(raw_t), median(native_prompt), median(native_stream));
    let (t_wasm_prompt, t_wasm_stream) = (median(prompt), median(stream));
    let native_tokens = tokenizers.count_prompt(&ChatRequest::parse(&body).expect("parse"));
    assert_eq!(
        tokens as usize, native_tokens,
        "wasm and native disagree on the count"
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "## Token counting: wasm against native (same corpus, same run)

Corpus: tests/fixtures/token-corpus.json (prose, code, CJK, emoji) repeated to {kib} KiB,
{tok} tokens in o200k_base. The wasm column is the release `.wasm` run by wasmtime 48
(Cranelift) through the test harness; Envoy runs it on V8, so read the ratio, not the
absolute figure. Medians of {ROUNDS} rounds.

| path | native MB/s | wasm MB/s | wasm / native |
|---|---:|---:|---:|
| tiktoken-rs `encode_ordinary` alone | {raw:.2} | | |
| prompt: parse the request and count (`proxy_on_request_body`) | {np:.2} | {wp:.2} | {rp:.2}× |
| completion: meter a {ev}-event stream and count (`proxy_on_response_body`) | {ns:.2} | {ws:.2} | {rs:.2}× |

Tokenizer set-up, once per VM (median of {VMS} VMs): natively {bn:.0} ms; in wasm,
instantiating the module {inst:.1} ms and `proxy_on_configure` (the default encoding built)
{conf:.0} ms. Linear memory of a configured VM: **{mem:.1} MiB** (it stays there: see the
10,000-request run in the harness scenarios).
",
        kib = n / 1024,
        tok = native_tokens,
        raw = mb_per_s(n, t_raw),
        np = mb_per_s(n, t_native_prompt),
        wp = mb_per_s(n, t_wasm_prompt),
        rp = t_native_prompt.as_secs_f64() / t_wasm_prompt.as_secs_f64(),
        ev = events.len(),
        ns = mb_per_s(n, t_native_stream),
        ws = mb_per_s(n, t_wasm_stream),
        rs = t_native_stream.as_secs_f64() / t_wasm_stream.as_secs_f64(),
        bn = ms(build_native),
        inst = ms(median(instantiate)),
        conf = ms(median(configure)),
        mem = memory as f64 / 1048576.0,
    );
}
