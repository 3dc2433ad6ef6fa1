//! The `http` step: one HTTP call with a time limit, a response-size cap, no redirects,
//! and an optional host allowlist.

use std::time::Duration;

use reqwest::{Method, Url};

/// Limits of the `http` step, from `[runbooks]`.
#[derive(Debug, Clone)]
pub struct HttpStep {
    pub timeout: Duration,
    pub max_body: usize,
    /// `host` or `host:port` entries; empty allows any host.
    pub allowed_hosts: Vec<String>,
}

/// A request that passed the checks.
#[derive(Debug, Clone)]
pub struct Checked {
    method: Method,
    url: Url,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// The body as text (lossy UTF-8), at most `max_body` bytes.
    pub body: String,
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
}

impl Checked {
    /// `host:port`, the key of per-host limits.
    pub fn host(&self) -> String {
        format!(
            "{}:{}",
            self.url.host_str().unwrap_or(""),
            self.url.port_or_known_default().unwrap_or(0)
        )
    }
}

impl HttpStep {
    /// Checks the method, the URL and the host before anything is sent.
    pub fn check(&self, method: &str, url: &str) -> Result<Checked, String> {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "HEAD" => Method::HEAD,
            other => {
                return Err(format!(
                    "unsupported method {other:?}; use GET, POST, PUT, PATCH, DELETE or HEAD"
                ))
            }
        };
        let parsed = Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("URL {url:?}: only http and https are allowed"));
        }
        let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
        if !self.allowed_hosts.is_empty() {
            let port = parsed.port_or_known_default().unwrap_or(0);
            let with_port = format!("{host}:{port}");
            let allowed = self
                .allowed_hosts
                .iter()
                .any(|h| *h == host || *h == with_port);
            if !allowed {
                return Err(format!(
                    "host {with_port} is not in runbooks.http_allowed_hosts"
                ));
            }
        }
        Ok(Checked {
            method,
            url: parsed,
        })
    }

    /// Sends the request and reads at most `max_body` bytes of the answer.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        req: Checked,
        body: String,
    ) -> Result<HttpResponse, HttpError> {
        let call = async {
            let mut builder = client.request(req.method, req.url);
            if !body.is_empty() {
                let trimmed = body.trim_start();
                let content_type = if trimmed.starts_with('{') || trimmed.starts_with('[') {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body);
            }
            let mut resp = builder
                .send()
                .await
                .map_err(|e| HttpError::Transport(transport(&e)))?;
            let status = resp.status().as_u16();
            let mut bytes = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| HttpError::Transport(transport(&e)))?
            {
                let room = self.max_body.saturating_sub(bytes.len());
                if chunk.len() > room {
                    bytes.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(HttpResponse {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                truncated,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(HttpError::Timeout(self.timeout)))
    }
}

/// reqwest's error with its causes, on one line.
fn transport(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(hosts: &[&str]) -> HttpStep {
        HttpStep {
            timeout: Duration::from_secs(1),
            max_body: 16,
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn checks_method_scheme_and_host() {
        let s = step(&["admin.internal", "127.0.0.1:8080"]);
        assert!(s.check("post", "http://admin.internal/shed").is_ok());
        assert!(s.check("GET", "http://127.0.0.1:8080/x").is_ok());
        assert_eq!(
            s.check("GET", "http://127.0.0.1:9090/x").unwrap_err(),
            "host 127.0.0.1:9090 is not in runbooks.http_allowed_hosts"
        );
        assert_eq!(
            s.check("GET", "file:///etc/passwd").unwrap_err(),
            "URL \"file:///etc/passwd\": only http and https are allowed"
        );
        assert!(s
            .check("TRACE", "http://admin.internal/")
            .unwrap_err()
            .starts_with("unsupported method"));
        assert!(s
            .check("GET", "not a url")
            .unwrap_err()
            .starts_with("invalid URL"));
        assert!(step(&[]).check("GET", "https://anywhere.example/").is_ok());
    }

    #[tokio::test]
    async fn caps_the_body_and_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // First connection: a large body. Second: never answers.
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).await;
            let body = "x".repeat(100);
            let _ = c
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            let (_c2, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let s = step(&[]);
        let client = reqwest::Client::new();
        let r = s
            .send(
                &client,
                s.check("GET", &format!("http://{addr}/")).unwrap(),
                String::new(),
            )
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len(), r.truncated), (200, 16, true));
        let s = HttpStep {
            timeout: Duration::from_millis(200),
            ..s
        };
        let e = s
            .send(
                &client,
                s.check("GET", &format!("http://{addr}/")).unwrap(),
                String::new(),
            )
            .await;
        assert!(matches!(e, Err(HttpError::Timeout(_))), "{e:?}");
    }
}
