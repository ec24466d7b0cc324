//! Probes (IO): one attempt against one endpoint — HTTP/HTTPS GET with an expected status, TCP connect, or a
//! DNS query — bounded by a timeout, optionally from a chosen source address (an observer's vantage point).
//! A probe never panics and never hangs past its timeout; the result carries latency and a short reason.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azora_api::region::{ProbeEndpoint, ProbeType};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket, lookup_host};

/// Result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the endpoint answered as expected.
    pub ok: bool,
    /// Time taken.
    pub latency: Duration,
    /// Short reason on failure (`timeout`, `connect: Connection refused`, `status 503`).
    pub reason: String,
}

/// Runs probes with shared settings.
#[derive(Clone)]
pub struct Prober {
    source: Option<IpAddr>,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl Prober {
    /// A prober that connects from `source` when given.
    pub fn new(source: Option<IpAddr>) -> Self {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                tokio_rustls::rustls::ClientConfig::builder()
                    .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        Self {
            source,
            tls: Arc::new(tls),
        }
    }

    /// Probes one endpoint within `timeout`.
    pub async fn probe(&self, endpoint: &ProbeEndpoint, timeout: Duration) -> ProbeResult {
        let start = Instant::now();
        let outcome = tokio::time::timeout(timeout, self.attempt(endpoint)).await;
        let latency = start.elapsed();
        match outcome {
            Ok(Ok(())) => ProbeResult {
                ok: true,
                latency,
                reason: String::new(),
            },
            Ok(Err(reason)) => ProbeResult {
                ok: false,
                latency,
                reason,
            },
            Err(_) => ProbeResult {
                ok: false,
                latency,
                reason: "timeout".into(),
            },
        }
    }

    async fn attempt(&self, e: &ProbeEndpoint) -> Result<(), String> {
        match e.type_ {
            ProbeType::TCP => {
                let addr = resolve(e.address.as_deref().unwrap_or_default()).await?;
                self.connect(addr).await.map(|_| ())
            }
            ProbeType::HTTP | ProbeType::HTTPS => {
                let url = Url::parse(e.url.as_deref().unwrap_or_default())?;
                let addr = resolve(&format!("{}:{}", url.host, url.port)).await?;
                let stream = self.connect(addr).await?;
                let status = if e.type_ == ProbeType::HTTPS {
                    let server = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())
                        .map_err(|e| format!("tls name: {e}"))?;
                    let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                        .connect(server, stream)
                        .await
                        .map_err(|e| format!("tls: {e}"))?;
                    http_get(tls, &url).await?
                } else {
                    http_get(stream, &url).await?
                };
                if status == e.expected_status {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
            ProbeType::DNS => {
                let addr = resolve(e.address.as_deref().unwrap_or_default()).await?;
                dns_query(addr, e.query.as_deref().unwrap_or_default(), self.source).await
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(src) = self.source {
            socket
                .bind(SocketAddr::new(src, 0))
                .map_err(|e| format!("bind {src}: {e}"))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

async fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return Ok(a);
    }
    lookup_host(hostport)
        .await
        .map_err(|e| format!("resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {hostport}: no address"))
}

struct Url {
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or("url without scheme")?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_matches(|c| c == '[' || c == ']').to_string(),
                p.parse().map_err(|_| "bad port")?,
            ),
            _ => (authority.to_string(), default_port),
        };
        Ok(Self {
            host,
            port,
            path: path.to_string(),
        })
    }
}

async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, url: &Url) -> Result<u16, String> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: azora-probe\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut buf[got..]).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "malformed status line".to_string())
}

async fn dns_query(server: SocketAddr, name: &str, source: Option<IpAddr>) -> Result<(), String> {
    let bind = match (source, server.is_ipv4()) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, true) => "0.0.0.0:0".parse().map_err(|_| "addr")?,
        (None, false) => "[::]:0".parse().map_err(|_| "addr")?,
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| format!("bind: {e}"))?;
    let qname = Name::from_ascii(name).map_err(|e| format!("name: {e}"))?;
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(qname, RecordType::A));
    msg.metadata.recursion_desired = false;
    let bytes = msg.to_bytes().map_err(|e| format!("encode: {e}"))?;
    sock.send_to(&bytes, server)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| format!("recv: {e}"))?;
        if from != server {
            continue;
        }
        let resp = Message::from_bytes(&buf[..n]).map_err(|e| format!("decode: {e}"))?;
        if resp.metadata.id != msg.metadata.id {
            continue;
        }
        return match resp.metadata.response_code {
            hickory_proto::op::ResponseCode::ServFail | hickory_proto::op::ResponseCode::Refused => {
                Err(format!("rcode {}", resp.metadata.response_code))
            }
            _ => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_host_port_and_path() {
        let u = Url::parse("http://127.0.0.11:8080/healthz").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.11", 8080, "/healthz")
        );
        let u = Url::parse("https://health.lagos.azora.io").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("health.lagos.azora.io", 443, "/")
        );
        let u = Url::parse("http://[::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
    }

    fn endpoint(type_: ProbeType, url: Option<&str>, address: Option<&str>) -> ProbeEndpoint {
        ProbeEndpoint {
            name: "e".into(),
            type_,
            url: url.map(Into::into),
            address: address.map(Into::into),
            query: Some("example.".into()),
            expected_status: 200,
        }
    }

    #[tokio::test]
    async fn http_probe_checks_the_status_of_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let p = Prober::new(None);
        let e = endpoint(ProbeType::HTTP, Some(&format!("http://{addr}/healthz")), None);
        assert!(p.probe(&e, Duration::from_secs(2)).await.ok);
        let second = p.probe(&e, Duration::from_secs(2)).await;
        assert_eq!((second.ok, second.reason.as_str()), (false, "status 503"));
    }

    #[tokio::test]
    async fn refused_and_hung_endpoints_fail_within_the_timeout() {
        let p = Prober::new(None);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = p
            .probe(
                &endpoint(ProbeType::TCP, None, Some(&closed.to_string())),
                Duration::from_secs(2),
            )
            .await;
        assert!(!r.ok && r.reason.starts_with("connect"), "{r:?}");
        // A listener that accepts but never answers: an HTTP probe must time out.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = hung.local_addr().unwrap();
        let e = endpoint(ProbeType::HTTP, Some(&format!("http://{addr}/")), None);
        let r = p.probe(&e, Duration::from_millis(300)).await;
        assert_eq!((r.ok, r.reason.as_str()), (false, "timeout"));
        assert!(r.latency < Duration::from_secs(1));
        drop(hung);
    }
}
