//! A real browser for the console tests: `chromedriver` on a free loopback port, and
//! headless Chromium sessions driven over WebDriver.
//!
//! The binaries come from `MEDIC_CHROMEDRIVER_BIN` and `MEDIC_CHROMIUM_BIN`, which
//! `scripts/test.sh` installs and exports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// A running `chromedriver`, shut down (with the browsers it started) on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
}

fn bin(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set: the browser tests need Chromium and chromedriver; \
             run scripts/test.sh, which installs them and sets {var}"
        ),
    }
}

/// A minimal blocking HTTP GET to the driver; the response, or None if it did not answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // chromedriver keeps the connection open: read up to the end of the body.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                break;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl Driver {
    /// Starts `chromedriver` and waits until it reports itself ready.
    pub fn start() -> Driver {
        let driver = bin("MEDIC_CHROMEDRIVER_BIN");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let mut d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = http_get(d.addr, "/status") {
                if r.contains("\"ready\":true") || r.contains("\"ready\": true") {
                    return d;
                }
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("chromedriver exited before answering: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within 20s",
                d.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new headless Chromium session.
    pub async fn session(&self) -> Client {
        let chromium = bin("MEDIC_CHROMIUM_BIN");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{}", self.addr))
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `/shutdown` makes chromedriver quit the browsers it started; a plain kill would
        // leave them running.
        let _ = http_get(self.addr, "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where to save screenshots (`MEDIC_SCREENSHOTS`), if anywhere.
pub fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("MEDIC_SCREENSHOTS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Saves a PNG of what `c` shows as `<MEDIC_SCREENSHOTS>/<name>.png`, when that is set.
pub async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = screenshot_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}
