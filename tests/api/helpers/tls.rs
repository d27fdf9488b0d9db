//! HTTPS for tests: a server with a fresh self-signed certificate for 127.0.0.1, and a
//! one-request HTTP/1.1 client over rustls that shows the exact bytes of the exchange.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, TestApp};

/// A server speaking HTTPS only, its address (`127.0.0.1:port`) and a client configuration
/// that trusts its certificate. The folder holds the PEM files for as long as it lives.
pub struct HttpsApp {
    pub app: TestApp,
    pub addr: String,
    pub trusting: Arc<rustls::ClientConfig>,
    /// The server's certificate (PEM).
    pub cert_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn spawn_https(backend: Backend) -> HttpsApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).expect("write key");
    let app = TestApp::builder(backend)
        .tls(&cert_file, &key_file)
        .spawn()
        .await;
    assert!(app.base.starts_with("https://127.0.0.1:"), "{}", app.base);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    HttpsApp {
        addr: app.base.trim_start_matches("https://").to_string(),
        app,
        trusting: client_config(roots),
        cert_file,
        _dir: dir,
    }
}

pub fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An answer read whole: status, the header lines as sent, body.
pub struct HttpsReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpsReply {
    /// Every value of header `name` (case-insensitive).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// One HTTP/1.1 request over TLS to 127.0.0.1 (`request_line` is "METHOD /path"), with
/// `headers` and `body`.
pub async fn https(
    config: &Arc<rustls::ClientConfig>,
    addr: &str,
    request_line: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpsReply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .expect("name")
        .to_owned();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(HttpsReply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
