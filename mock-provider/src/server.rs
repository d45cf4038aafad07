//! HTTP side of the mock: `/v1/chat/completions`, `/v1/models`, and
//! `/_mock/stats` (what reached it, for tests that assert nothing leaked).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tiktoken_rs::CoreBPE;

use crate::completion::{chunks, completion, decide};
use crate::faults::Faults;
use crate::Args;

struct Mock {
    args: Args,
    bpe: CoreBPE,
    requests: AtomicU64,
    completions: AtomicU64,
    last_headers: Mutex<Vec<(String, String)>>,
}

type Shared = Arc<Mock>;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let bpe = tiktoken_rs::o200k_base()?;
    let listen = args.listen.clone();
    let flavor = args.flavor;
    let state = Arc::new(Mock {
        args,
        bpe,
        requests: AtomicU64::new(0),
        completions: AtomicU64::new(0),
        last_headers: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route(flavor.chat_route(), post(chat))
        .route("/v1/models", get(models))
        .route("/_mock/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("tollgate-mock-provider listening on {listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
            }
        })
        .await?;
    Ok(())
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

async fn stats(State(m): State<Shared>) -> Json<Value> {
    let headers = m.last_headers.lock().map(|h| h.clone()).unwrap_or_default();
    Json(json!({
        "requests": m.requests.load(Ordering::SeqCst),
        "completions": m.completions.load(Ordering::SeqCst),
        "last_headers": headers.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    }))
}

async fn models(State(m): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&m, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        );
    }
    let data: Vec<Value> = m
        .args
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Any of the configured keys is accepted (an operator's and a paywall's own).
fn authorized(m: &Mock, headers: &HeaderMap) -> bool {
    m.args
        .api_key
        .split(',')
        .any(|key| m.args.flavor.authorized(key.trim(), headers))
}

async fn chat(
    State(m): State<Shared>,
    deployment: Option<Path<String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    m.requests.fetch_add(1, Ordering::SeqCst);
    remember_headers(&m, &headers);
    if let Err(refused) = admit(&m, &uri, &headers) {
        return refused;
    }
    let faults = Faults::from_headers(&headers);
    if let Some(ms) = faults.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = faults.status {
        let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(s, "server_error", "mock_fault", "Injected failure.");
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                &e.to_string(),
            )
        }
    };
    if let Err(refused) = check_model(&m, deployment.as_ref().map(|Path(d)| d.as_str()), &req) {
        return refused;
    }
    m.completions.fetch_add(1, Ordering::SeqCst);
    answer(&m, &req, &faults)
}

/// The headers of the last request, for tests that check what arrived.
fn remember_headers(m: &Mock, headers: &HeaderMap) {
    if let Ok(mut last) = m.last_headers.lock() {
        *last = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
    }
}

/// The provider's own refusals: the key, the URL shape of its kind, and the
/// configured outage.
#[allow(clippy::result_large_err)] // a refusal is the whole answer
fn admit(m: &Mock, uri: &Uri, headers: &HeaderMap) -> Result<(), Response> {
    if !authorized(m, headers) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        ));
    }
    if let Some(problem) = m.args.flavor.url_problem(uri) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_url",
            &problem,
        ));
    }
    if let Some(status) = m.args.fail_status {
        let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(error(
            s,
            "server_error",
            "unavailable",
            "The provider is unavailable.",
        ));
    }
    Ok(())
}

/// A known model and messages. Azure names the model by the deployment in
/// the path; the body's is ignored.
#[allow(clippy::result_large_err)] // a refusal is the whole answer
fn check_model(m: &Mock, deployment: Option<&str>, req: &Value) -> Result<(), Response> {
    let model = deployment.or_else(|| req["model"].as_str());
    let Some(model) = model.filter(|_| req["messages"].is_array()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            "model and messages are required",
        ));
    };
    if !m.args.models.iter().any(|known| known == model) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &format!("The model `{model}` does not exist or you do not have access to it."),
        ));
    }
    Ok(())
}

/// The completion, as JSON or as an SSE stream.
fn answer(m: &Mock, req: &Value, faults: &Faults) -> Response {
    let reply = decide(&m.bpe, req);
    let id = format!("chatcmpl-mock{}", m.completions.load(Ordering::SeqCst));
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if req["stream"] != true {
        let mut body = completion(&id, created, &reply);
        if faults.omit_usage {
            if let Some(o) = body.as_object_mut() {
                o.remove("usage");
            }
        }
        return Json(body).into_response();
    }
    let include_usage = req["stream_options"]["include_usage"] == true && !faults.omit_usage;
    let mut events = chunks(&m.bpe, &id, created, &reply, include_usage);
    if let Some(n) = faults.error_after {
        events.truncate(n);
        events.push(
            json!({"error": {"message": "The server had an error while processing your request.",
                                     "type": "server_error", "param": null, "code": null}}),
        );
    }
    let delay = Duration::from_millis(faults.chunk_delay_ms.unwrap_or(m.args.chunk_delay_ms));
    let stream = async_stream(events, delay, faults.cut_after);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Emits one SSE event per chunk with a pause between them; `cut` resets the
/// connection after that many chunks (no usage, no `[DONE]`), like a provider
/// connection that drops.
fn async_stream(
    events: Vec<Value>,
    delay: Duration,
    cut: Option<usize>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let total = events.len();
    let limit = cut.unwrap_or(usize::MAX);
    futures_util::stream::unfold(0usize, move |i| {
        let events = events.clone();
        async move {
            if i > total || i > limit {
                return None;
            }
            if i == limit {
                let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected cut");
                return Some((Err(cut), i + 1));
            }
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            let bytes = match events.get(i) {
                Some(e) => Bytes::from(format!("data: {e}\n\n")),
                // After an error event the stream just ends.
                None if events.last().is_some_and(|e| e.get("error").is_some()) => return None,
                None => Bytes::from_static(b"data: [DONE]\n\n"),
            };
            Some((Ok(bytes), i + 1))
        }
    })
}
