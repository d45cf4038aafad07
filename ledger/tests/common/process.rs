//! The sidecar as a real process (the binary the tests build, with the
//! crash-test pauses compiled in) and raw HTTP/1.1 calls to it that report a
//! vanished peer as an error.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config_text;

pub const SECRET: &str = "process-test-secret-0123456789";

pub struct Sidecar {
    pub child: Child,
    pub port: u16,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sidecar on `database_url` with the suite's configuration, paused at
/// `fault` (a `TOLLGATE_FAULT_PAUSE` value) when given.
pub async fn spawn_sidecar(database_url: &str, fault: Option<&str>) -> Sidecar {
    let env: Vec<(&str, &str)> = fault
        .map(|f| ("TOLLGATE_FAULT_PAUSE", f))
        .into_iter()
        .collect();
    spawn_sidecar_with(database_url, &config_text("8.00"), &env).await
}

/// A sidecar on `database_url` with configuration `toml` and extra environment.
pub async fn spawn_sidecar_with(database_url: &str, toml: &str, env: &[(&str, &str)]) -> Sidecar {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-proc-{}",
        tollgate_ledger::access::secrets::random_hex(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ledger.toml");
    std::fs::write(&config, toml).unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate-ledger"));
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
        ])
        .env("TOLLGATE_INTERNAL_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.env_remove("TOLLGATE_FAULT_PAUSE");
    cmd.envs(env.iter().copied());
    let sidecar = Sidecar {
        child: cmd.spawn().unwrap(),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(port, "/healthz", &json!({})).await.is_err() {
        assert!(Instant::now() < deadline, "sidecar did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sidecar
}

/// An internal call (with the internal secret); Err when the peer vanished.
pub async fn post(port: u16, path: &str, body: &Value) -> std::io::Result<(u16, Value)> {
    let secret = format!("x-tollgate-internal-secret: {SECRET}");
    request(port, path, &[secret.as_str()], body).await
}

/// A public call with the paywall key `key` and `headers` ("name: value").
pub async fn post_as(
    port: u16,
    path: &str,
    key: &str,
    headers: &[&str],
    body: &Value,
) -> std::io::Result<(u16, Value)> {
    let mut all = vec![format!("authorization: Bearer {key}")];
    all.extend(headers.iter().map(|h| h.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    request(port, path, &all, body).await
}

/// An admin call (`method` with the admin token `token`).
#[allow(dead_code)]
pub async fn admin(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> std::io::Result<(u16, Value)> {
    let auth = format!("authorization: Bearer {token}");
    call(port, method, path, &[auth.as_str()], body).await
}

/// A POST (a GET for `/healthz`) with `headers`.
async fn request(
    port: u16,
    path: &str,
    headers: &[&str],
    body: &Value,
) -> std::io::Result<(u16, Value)> {
    let method = if path == "/healthz" { "GET" } else { "POST" };
    call(port, method, path, headers, body).await
}

/// One HTTP/1.1 request over a fresh connection; Err when the peer vanished.
async fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &Value,
) -> std::io::Result<(u16, Value)> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.to_string();
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: ledger\r\nconnection: close\r\ncontent-type: application/json\r\n\
         {headers}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"))?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}
