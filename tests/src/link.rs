//! A TCP link a test can cut (IO): it forwards a local port to an upstream address; cut, it closes every
//! forwarded connection and holds new ones open without an answer (new requests hang as behind a firewall
//! that drops them; requests under way fail at once); mended, it forwards again. Used to cut one path only (a region agent ↔ the hub) while every other path
//! stays up.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running link; dropped, it stops.
pub struct CuttableLink {
    /// The local port it listens on (127.0.0.1).
    pub port: u16,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl CuttableLink {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, _) = watch::channel(false);
        let state = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                tokio::spawn(forward(down, upstream, state.subscribe()));
            }
        });
        Ok(Self { port, cut, task })
    }

    /// Cuts the link: forwarded connections end, new ones get no answer.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Mends it.
    pub fn mend(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.task.abort();
        // Held and forwarded connections end with the sender.
    }
}

async fn forward(mut down: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        // Held without an answer until the link is mended (or gone); then closed, and the client retries.
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}
