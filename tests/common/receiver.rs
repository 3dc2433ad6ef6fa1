//! A local HTTP receiver for notification tests: records every POST (path, headers, JSON
//! body) and answers 200, or a scripted status for the first attempts on a path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// The status it was answered with.
    pub status: u16,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<Received>>,
    script: Mutex<HashMap<String, VecDeque<u16>>>,
    always: Mutex<HashMap<String, u16>>,
    notify: tokio::sync::Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts on a free loopback port (or `addr`), in the current tokio runtime.
    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Receiver {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests to `path` with these statuses, then 200.
    pub fn fail_first(&self, path: &str, statuses: &[u16]) {
        self.inner
            .script
            .lock()
            .unwrap()
            .insert(path.into(), statuses.iter().copied().collect());
    }

    /// Answers every request to `path` with `status` (until changed; 200 clears).
    pub fn always(&self, path: &str, status: u16) {
        self.inner
            .always
            .lock()
            .unwrap()
            .insert(path.into(), status);
    }

    /// Every request so far, in order.
    pub fn all(&self) -> Vec<Received> {
        self.inner.got.lock().unwrap().clone()
    }

    /// Requests to `path` that were accepted (2xx).
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.path == path && r.status < 300)
            .collect()
    }

    /// Waits until `n` requests to `path` were accepted, or panics after `limit`.
    pub async fn wait_delivered(
        &self,
        path: &str,
        n: usize,
        limit: std::time::Duration,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before looking: a request recorded in between still wakes us
            // (`notify_waiters` keeps no permit for later waiters).
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.delivered(path);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {n} deliveries to {path}; got {:#?}",
                    self.all()
                );
            }
        }
    }
}

async fn record(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_string();
    let scripted = inner
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(|q| q.pop_front());
    let always = inner.always.lock().unwrap().get(&path).copied();
    let status = scripted
        .or(always)
        .unwrap_or(if path.contains("pagerduty") { 202 } else { 200 });
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    inner.got.lock().unwrap().push(Received {
        path,
        headers,
        body,
        status,
        at: std::time::Instant::now(),
    });
    inner.notify.notify_waiters();
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
