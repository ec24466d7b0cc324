//! `azora-region-sim`: a simulated region endpoint — a small HTTP server answering `GET /healthz` with 200.
//! Outages are made from outside, for real: SIGSTOP (connections hang), SIGKILL (connections refused).
//! `--deny-source IP` drops connections from one source address, so one observer can be cut off from an
//! otherwise healthy region.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    name = "azora-region-sim",
    about = "A simulated region endpoint for tests and the demo"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.11:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// Region name, echoed in responses.
    #[arg(long)]
    name: String,
    /// Drop connections from this source address (repeatable).
    #[arg(long = "deny-source")]
    deny: Vec<IpAddr>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("region {} serving on {}", args.name, args.listen);
    loop {
        let (mut sock, peer) = listener.accept().await?;
        if args.deny.contains(&peer.ip()) {
            drop(sock);
            continue;
        }
        let name = args.name.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /healthz") {
                ("200 OK", format!("ok {name}\n"))
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
