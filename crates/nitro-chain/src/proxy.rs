//! A fault-injecting JSON-RPC proxy for tests: an HTTP endpoint in front of a node (anvil)
//! that decides, per request, what the client gets — the node's answer, late; an answer lost
//! after the request took effect; a JSON-RPC error; an HTTP 5xx; nothing at all (an outage) —
//! so that the chain shell can be tested against a node behind a flaky network or a load
//! balancer whose backends disagree. It speaks the subset of HTTP/1.1 that JSON-RPC clients
//! use (`content-length` bodies, keep-alive) and counts what it saw.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    time::{sleep, Instant},
};

/// What the proxy does with one JSON-RPC request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Pass it on, and the node's answer back.
    Forward,
    /// Pass it on after this delay (a slow or lagging backend).
    Delay(Duration),
    /// Pass it on, then close the connection instead of answering: the request took effect,
    /// its answer is lost.
    LoseAnswer,
    /// Answer with this result without asking the node.
    Answer(Value),
    /// Answer with this JSON-RPC error (code, message) without asking the node.
    Error(i64, String),
    /// Answer with this HTTP status and no body (a 502 or 503 of a gateway).
    Http(u16),
    /// Close the connection without passing the request on (the node is unreachable).
    Drop,
}

/// One JSON-RPC request as a rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The method.
    pub method: &'a str,
    /// The params.
    pub params: &'a Value,
}

type Rule = Arc<dyn Fn(&Call<'_>) -> Fault + Send + Sync>;

#[derive(Default)]
struct Shared {
    rule: RwLock<Option<Rule>>,
    down_until: Mutex<Option<Instant>>,
    counts: Mutex<HashMap<String, u64>>,
}

/// The proxy (a handle: clones share it). It serves until the tokio runtime that started it
/// stops, which for a test is the end of the test.
#[derive(Clone)]
pub struct RpcProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RpcProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcProxy").field("port", &self.port).finish()
    }
}

impl RpcProxy {
    /// A proxy on a free loopback port in front of the node listening on loopback `upstream`,
    /// forwarding everything until told otherwise.
    pub async fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if serving.is_down() {
                    drop(inbound); // refused: the node is unreachable
                    continue;
                }
                tokio::spawn(serve(inbound, upstream, serving.clone()));
            }
        });
        Ok(Self { port, shared })
    }

    /// The proxy's JSON-RPC endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Decides every request from now on by `rule` (replacing the previous rule).
    pub fn set_rule(&self, rule: impl Fn(&Call<'_>) -> Fault + Send + Sync + 'static) {
        if let Ok(mut slot) = self.shared.rule.write() {
            *slot = Some(Arc::new(rule));
        }
    }

    /// Forwards everything again.
    pub fn clear_rule(&self) {
        if let Ok(mut slot) = self.shared.rule.write() {
            *slot = None;
        }
    }

    /// The node is unreachable for `duration` from now: connections are refused and requests
    /// on open ones dropped unanswered.
    pub fn outage(&self, duration: Duration) {
        if let Ok(mut until) = self.shared.down_until.lock() {
            *until = Some(Instant::now() + duration);
        }
    }

    /// How many requests of `method` reached the proxy.
    pub fn count(&self, method: &str) -> u64 {
        self.shared.counts.lock().map(|c| c.get(method).copied().unwrap_or(0)).unwrap_or(0)
    }
}

impl Shared {
    fn is_down(&self) -> bool {
        self.down_until.lock().map(|u| u.is_some_and(|until| Instant::now() < until)).unwrap_or(false)
    }

    fn decide(&self, call: &Call<'_>) -> Fault {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(call.method.to_owned()).or_default() += 1;
        }
        if self.is_down() {
            return Fault::Drop;
        }
        let rule = self.rule.read().ok().and_then(|r| r.clone());
        rule.map_or(Fault::Forward, |rule| rule(call))
    }
}

async fn serve(inbound: TcpStream, upstream: u16, shared: Arc<Shared>) {
    let (read, mut write) = inbound.into_split();
    let mut read = BufReader::new(read);
    let mut node: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> = None;
    while let Some((head, body)) = read_http(&mut read).await {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let method = request.get("method").and_then(Value::as_str).unwrap_or_default();
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        let fault = shared.decide(&Call { method, params: &params });
        let answer = |payload: Value| {
            let mut object =
                serde_json::json!({ "jsonrpc": "2.0", "id": request.get("id").cloned().unwrap_or(Value::Null) });
            if let (Some(o), Some(p)) = (object.as_object_mut(), payload.as_object()) {
                o.extend(p.clone());
            }
            http_response(200, &object.to_string())
        };
        let response = match fault {
            Fault::Drop => return,
            Fault::Answer(result) => answer(serde_json::json!({ "result": result })),
            Fault::Error(code, message) => answer(serde_json::json!({ "error": { "code": code, "message": message } })),
            Fault::Http(status) => http_response(status, ""),
            Fault::Forward | Fault::Delay(_) | Fault::LoseAnswer => {
                if let Fault::Delay(delay) = fault {
                    sleep(delay).await;
                }
                if node.is_none() {
                    let Ok(stream) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let (r, w) = stream.into_split();
                    node = Some((BufReader::new(r), w));
                }
                let Some((node_read, node_write)) = node.as_mut() else { return };
                if node_write.write_all(head.as_bytes()).await.is_err() || node_write.write_all(&body).await.is_err() {
                    return;
                }
                let Some((head, body)) = read_http(node_read).await else { return };
                if fault == Fault::LoseAnswer {
                    return; // the request took effect; the answer never arrives
                }
                [head.into_bytes(), body].concat()
            }
        };
        if write.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn http_response(status: u16, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Most bytes of one HTTP message's head or body the proxy reads (bounded memory).
const MAX_MESSAGE: usize = 16 << 20;

/// One HTTP/1.1 message with a `content-length` body: (head with its blank line, body).
async fn read_http(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 || head.len() > MAX_MESSAGE {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_MESSAGE {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((head, body))
}
