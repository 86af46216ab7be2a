//! `SmtpSink`: a real SMTP server on loopback that keeps every message it is given, for the
//! tests of mail. The site's real SMTP client (lettre) talks to it over TCP; the test reads
//! what arrived, can stop the server (connections refused) and start it again on the same port.
//!
//! Written here rather than taken from a crate: the Rust SMTP servers are either whole mail
//! servers or unmaintained, and the tests need only the plain dialogue of RFC 5321 (EHLO,
//! MAIL, RCPT, DATA, QUIT), which fits in a page.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    /// The message as sent after `DATA`: headers, a blank line, the body.
    pub data: String,
}

impl Mail {
    /// The `Subject` header's value.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_lowercase());
        self.data
            .lines()
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_owned())
    }

    /// The body, decoded when it is quoted-printable (lettre sends plain ASCII with short
    /// lines as 7bit, anything else as quoted-printable).
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        if self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"))
        {
            decode_quoted_printable(&body.replace("=\r\n", ""))
        } else {
            body.to_owned()
        }
    }

    /// The first link in the body that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let body = self.body();
        let at = body.find(prefix)?;
        Some(body[at..].split_whitespace().next().unwrap_or_default().to_owned())
    }
}

/// `=XX` escapes to their bytes (RFC 2045, 6.7), soft line breaks already joined.
fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..(i + 3).min(bytes.len())]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<Mail>>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SmtpSink {
    /// A sink listening on a free loopback port.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for SMTP");
        let port = listener.local_addr().expect("local address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(serve(listener, Arc::clone(&received)));
        SmtpSink { port, received, server: Mutex::new(Some(server)) }
    }

    /// `SMTP_URL` for it: plain SMTP on loopback.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops listening: connections are refused until [`SmtpSink::resume`].
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind the SMTP port again");
        *self.server.lock().unwrap() = Some(tokio::spawn(serve(listener, Arc::clone(&self.received))));
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Mail> {
        self.received.lock().unwrap().clone()
    }

    /// Messages received so far for `to`.
    pub fn received_by(&self, to: &str) -> Vec<Mail> {
        self.received().into_iter().filter(|mail| mail.to.iter().any(|t| t == to)).collect()
    }

    /// Waits up to `timeout` for a message to `to` whose subject holds `subject`.
    pub async fn wait_for(&self, to: &str, subject: &str, timeout: Duration) -> Mail {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(mail) = self.received_by(to).into_iter().find(|mail| mail.subject().contains(subject))
            {
                return mail;
            }
            if Instant::now() >= deadline {
                let subjects: Vec<(Vec<String>, String)> =
                    self.received().iter().map(|mail| (mail.to.clone(), mail.subject())).collect();
                panic!("no mail to {to} about {subject:?} within {timeout:?}; received: {subjects:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(listener: TcpListener, received: Arc<Mutex<Vec<Mail>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(session(stream, Arc::clone(&received)));
    }
}

/// One SMTP session: each message accepted goes into `received`.
async fn session(stream: TcpStream, received: Arc<Mutex<Vec<Mail>>>) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader);
    let mut to = Vec::new();
    let mut line = String::new();
    if writer.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("HELO") || command.starts_with("NOOP") {
            b"250 sink\r\n"
        } else if command.starts_with("MAIL FROM") {
            to.clear();
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..].trim().trim_start_matches(':').trim();
            to.push(address.trim_start_matches('<').split('>').next().unwrap_or_default().to_owned());
            b"250 OK\r\n"
        } else if command == "DATA" {
            if writer.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                // Dot-unstuffing (RFC 5321, 4.5.2).
                data.push_str(line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line));
            }
            received.lock().unwrap().push(Mail { to: std::mem::take(&mut to), data });
            b"250 OK queued\r\n"
        } else if command == "RSET" {
            to.clear();
            b"250 OK\r\n"
        } else if command == "QUIT" {
            let _ = writer.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        if writer.write_all(reply).await.is_err() {
            return;
        }
    }
}
