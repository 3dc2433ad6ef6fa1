//! A real SMTP server for the e-mail tests: Python's aiosmtpd (installed by
//! `scripts/test.sh`) on a free loopback port. Each accepted mail is written as JSON: its
//! envelope, its headers and its decoded text and HTML parts. Recipients whose local part
//! starts with `reject` are refused with `550`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SINK: &str = r#"
import email, email.policy, itertools, json, os, signal, sys
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])
counter = itertools.count()

class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split('@')[0].startswith('reject'):
            return '550 5.1.1 <%s>: no such user' % address
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        parts = {}
        types = []
        for part in msg.walk():
            types.append(part.get_content_type())
            if part.get_content_type() in ('text/plain', 'text/html'):
                parts[part.get_content_type()] = part.get_content()
        doc = {
            'mail_from': envelope.mail_from,
            'rcpt_to': envelope.rcpt_tos,
            'headers': {k: str(v) for k, v in msg.items()},
            'content_types': types,
            'parts': parts,
        }
        path = os.path.join(out, '%05d' % next(counter))
        with open(path + '.tmp', 'w') as f:
            json.dump(doc, f)
        os.rename(path + '.tmp', path + '.json')
        return '250 Message accepted'

controller = Controller(Sink(), hostname='127.0.0.1', port=port)
controller.start()
print('ready', flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
signal.pause()
"#;

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("sink.py");
        std::fs::write(&script, SINK).unwrap();
        std::fs::create_dir_all(dir.path().join("mail")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child =
            Command::new(std::env::var("MEDIC_PYTHON").unwrap_or_else(|_| "python3".into()))
                .arg(&script)
                .arg(dir.path().join("mail"))
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start python3 (aiosmtpd): run scripts/test.sh to install it");
        let sink = SmtpSink { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the SMTP sink did not start (is aiosmtpd installed? scripts/test.sh installs it)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Every mail accepted so far, in order.
    pub fn mails(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.mail_dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits for `n` mails.
    pub async fn wait_mails(&self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} mails; got {mails:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
