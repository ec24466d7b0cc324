//! The region agent's links (IO): `--link PEER=LISTEN->UPSTREAM` is a TCP proxy that the traffic from region
//! PEER into a service of this region passes through (in production the peer's route to the service; in
//! tests the peer's client is pointed at LISTEN). Network faults are made here, in user space:
//! - `NetworkPartition` from PEER: nothing crosses the link any more; connections open across it and new
//!   ones hang like dropped packets, and are closed when the partition heals (as timed-out connections
//!   would be);
//! - `NetworkLatency` from PEER: every chunk going back to PEER waits the added round trip first (the
//!   region's egress delayed, as `netem delay` would), order and throughput kept.
//!
//! The agent measures what it made: a small request through the link and straight to the upstream, the
//! difference is the added round trip; a partition is seen as no answer through the link.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// One link: traffic from `peer` to `upstream` enters at `listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The region the traffic comes from.
    pub peer: String,
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The service of this region it forwards to.
    pub upstream: SocketAddr,
}

/// Parses `PEER=LISTEN->UPSTREAM`.
pub fn parse_link(s: &str) -> Result<Link, String> {
    let (peer, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("link {s:?}: expected PEER=LISTEN->UPSTREAM"))?;
    let (listen, upstream) = rest
        .split_once("->")
        .ok_or_else(|| format!("link {s:?}: expected PEER=LISTEN->UPSTREAM"))?;
    let peer = peer.trim();
    if peer.is_empty() {
        return Err(format!("link {s:?}: no peer region"));
    }
    Ok(Link {
        peer: peer.to_string(),
        listen: listen
            .trim()
            .parse()
            .map_err(|e| format!("link {s:?}: listen address: {e}"))?,
        upstream: upstream
            .trim()
            .parse()
            .map_err(|e| format!("link {s:?}: upstream address: {e}"))?,
    })
}

/// What a link does to its traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Traffic passes.
    #[default]
    Open,
    /// Nothing passes (a partition).
    Cut,
    /// Traffic back to the peer waits this long.
    Delay(Duration),
}

/// The agent's links and their modes (one mode per peer region).
#[derive(Debug, Default)]
pub struct Links {
    links: Vec<Link>,
    modes: BTreeMap<String, watch::Sender<Mode>>,
}

impl Links {
    /// Starts a proxy per link; a listen address that cannot be bound is an error (nothing started).
    pub async fn start(links: Vec<Link>) -> std::io::Result<Self> {
        let mut modes: BTreeMap<String, watch::Sender<Mode>> = BTreeMap::new();
        let mut listeners = Vec::new();
        for l in &links {
            listeners.push((TcpListener::bind(l.listen).await?, l.clone()));
        }
        for (listener, l) in listeners {
            let rx = modes
                .entry(l.peer.clone())
                .or_insert_with(|| watch::channel(Mode::Open).0)
                .subscribe();
            tokio::spawn(serve(listener, l.upstream, rx));
        }
        Ok(Self { links, modes })
    }

    /// Whether any link carries traffic from `peer`.
    pub fn has(&self, peer: &str) -> bool {
        self.modes.contains_key(peer)
    }

    /// The links from `peer`.
    pub fn from(&self, peer: &str) -> Vec<Link> {
        self.links.iter().filter(|l| l.peer == peer).cloned().collect()
    }

    /// Sets the mode of every link from `peer`.
    pub fn set(&self, peer: &str, mode: Mode) -> bool {
        match self.modes.get(peer) {
            Some(tx) => {
                tx.send_replace(mode);
                true
            }
            None => false,
        }
    }
}

/// Most connections one link carries (or holds across a partition) at once; beyond it new ones are not
/// accepted and wait in the listen backlog (they hang, as across a partition) until one ends.
pub const MAX_CONNECTIONS: usize = 1024;

async fn serve(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                let mode = mode.clone();
                tokio::spawn(async move {
                    connection(sock, upstream, mode).await;
                    drop(slot);
                });
            }
            Err(e) => {
                drop(slot);
                warn!(error = %e, "link accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits while the link is cut; true when the connection must close (it was cut, or the agent is gone).
async fn wait_cut(mode: &mut watch::Receiver<Mode>) -> bool {
    if *mode.borrow_and_update() != Mode::Cut {
        return false;
    }
    while *mode.borrow_and_update() == Mode::Cut {
        if mode.changed().await.is_err() {
            break;
        }
    }
    true
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A connection made across a partition hangs until it heals, then is closed.
    if wait_cut(&mut mode).await {
        return;
    }
    let server = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%upstream, error = %e, "link upstream refused");
            return;
        }
        Err(_) => return,
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Peer -> upstream passes as it comes; upstream -> peer waits the added latency.
    let up = pump(cr, sw, mode.clone(), false);
    let down = pump(sr, cw, mode, true);
    tokio::join!(up, down);
}

/// Copies `from` to `to` until either closes or the link is cut (then holds until it heals, and closes).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    delayed: bool,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut read_mode = mode.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                r = read_mode.changed() => {
                    if r.is_err() || wait_cut(&mut read_mode).await {
                        return;
                    }
                    continue;
                }
            };
            if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let mut write_mode = mode;
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            if wait_cut(&mut write_mode).await {
                return;
            }
            let current = *write_mode.borrow();
            if delayed && let Mode::Delay(d) = current {
                tokio::time::sleep_until((at + d).into()).await;
                if wait_cut(&mut write_mode).await {
                    return;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// The time a small request takes to get a first answer (a byte or the close) from `addr`; `None` when
/// nothing comes within `timeout`. Protocol-agnostic: HTTP servers answer the request line, TLS servers
/// answer it with an error, PostgreSQL and Redis with an error or a close.
pub async fn round_trip(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let _ = s.set_nodelay(true);
        s.write_all(b"HEAD /azora-link-probe HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut b = [0u8; 1];
        let _ = s.read(&mut b).await;
        Some(start.elapsed())
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// The fastest of `n` round trips (`None` if none answered).
pub async fn best_round_trip(addr: SocketAddr, n: usize, timeout: Duration) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for _ in 0..n {
        if let Some(d) = round_trip(addr, timeout).await {
            best = Some(best.map_or(d, |b| b.min(d)));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_and_bad_ones_say_why() {
        let l = parse_link("europe=127.0.0.1:7001->127.0.0.1:9000").unwrap();
        assert_eq!(l.peer, "europe");
        assert_eq!(l.listen.port(), 7001);
        assert_eq!(l.upstream.port(), 9000);
        assert!(
            parse_link("europe=127.0.0.1:7001")
                .unwrap_err()
                .contains("PEER=LISTEN->UPSTREAM")
        );
        assert!(
            parse_link("=127.0.0.1:1->127.0.0.1:2")
                .unwrap_err()
                .contains("no peer")
        );
        assert!(
            parse_link("europe=nowhere->127.0.0.1:2")
                .unwrap_err()
                .contains("listen")
        );
    }

    /// A real upstream answering a line with a line, through a real link: open, delayed, cut, healed.
    #[tokio::test]
    async fn a_link_passes_delays_cuts_and_heals_real_traffic() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = upstream.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(b"ok\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let links = Links::start(vec![Link {
            peer: "europe".into(),
            listen,
            upstream: up_addr,
        }])
        .await
        .unwrap();
        assert!(links.has("europe") && !links.has("asia"));
        let open = best_round_trip(listen, 3, Duration::from_secs(2)).await.unwrap();
        assert!(links.set("europe", Mode::Delay(Duration::from_millis(300))));
        let slow = best_round_trip(listen, 3, Duration::from_secs(2)).await.unwrap();
        assert!(
            slow >= open + Duration::from_millis(290),
            "open {open:?}, delayed {slow:?}"
        );
        // A connection open across the cut hangs, then is closed when the link heals.
        let mut held = TcpStream::connect(listen).await.unwrap();
        held.write_all(b"x").await.unwrap();
        let mut b = [0u8; 8];
        let _ = held.read(&mut b).await;
        links.set("europe", Mode::Cut);
        assert_eq!(round_trip(listen, Duration::from_millis(500)).await, None);
        held.write_all(b"y").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), held.read(&mut b))
                .await
                .is_err(),
            "data crossed a cut link"
        );
        links.set("europe", Mode::Open);
        let closed = tokio::time::timeout(Duration::from_secs(2), held.read(&mut b)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert!(round_trip(listen, Duration::from_secs(2)).await.is_some());
    }
}
