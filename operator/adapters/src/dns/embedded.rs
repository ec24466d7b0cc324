//! The embedded authoritative GeoDNS server (IO), on hickory-server, UDP and TCP. Answers SOA, NS, A, AAAA
//! and TXT (`_azora-epoch.<zone>`) for the published zones; picks the answer by the client's continent from
//! EDNS Client Subnet, else the source address, through the GeoIP table. Publishing refuses data with an
//! older epoch than what is served, so a deposed leader cannot roll answers back.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::geoip::GeoIp;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::Rng;
use tracing::{info, warn};

use super::{DnsError, Target, ZoneData};

/// The zones this replica serves; shared between the server and the publisher.
#[derive(Clone, Default)]
pub struct Zones {
    inner: Arc<RwLock<BTreeMap<String, Arc<Compiled>>>>,
    geoip: Arc<RwLock<GeoIp>>,
}

impl Zones {
    /// Empty zones with a GeoIP source (a `GeoIpTable` or an `.mmdb` database).
    pub fn new(geoip: impl Into<GeoIp>) -> Self {
        Self {
            inner: Arc::default(),
            geoip: Arc::new(RwLock::new(geoip.into())),
        }
    }

    /// Serves `data`, unless a newer epoch is already served. Returns whether anything changed.
    pub fn publish(&self, data: ZoneData) -> Result<bool, DnsError> {
        let key = data.zone.to_ascii_lowercase();
        let mut zones = self
            .inner
            .write()
            .map_err(|_| DnsError::Config("zones lock poisoned".into()))?;
        if let Some(cur) = zones.get(&key) {
            if cur.data.epoch > data.epoch {
                return Err(DnsError::StaleEpoch {
                    zone: key,
                    offered: data.epoch,
                    serving: cur.data.epoch,
                });
            }
            if cur.data == data {
                return Ok(false);
            }
        }
        zones.insert(key, Arc::new(Compiled::new(data)?));
        Ok(true)
    }

    /// Stops serving a zone.
    pub fn remove(&self, zone: &str) {
        if let Ok(mut z) = self.inner.write() {
            z.remove(&zone.to_ascii_lowercase());
        }
    }

    /// The data served for a zone.
    pub fn get(&self, zone: &str) -> Option<ZoneData> {
        self.inner
            .read()
            .ok()?
            .get(&zone.to_ascii_lowercase())
            .map(|c| c.data.clone())
    }

    /// Replaces the GeoIP source (a reload).
    pub fn set_geoip(&self, source: impl Into<GeoIp>) {
        if let Ok(mut g) = self.geoip.write() {
            *g = source.into();
        }
    }

    /// The zone a lower-case query name falls in (longest match), without allocating.
    fn find(&self, qname: &str) -> Option<Arc<Compiled>> {
        let zones = self.inner.read().ok()?;
        zones
            .iter()
            .filter(|(z, _)| {
                qname == z.as_str()
                    || (qname.len() > z.len()
                        && qname.ends_with(z.as_str())
                        && qname.as_bytes()[qname.len() - z.len() - 1] == b'.')
            })
            .max_by_key(|(z, _)| z.len())
            .map(|(_, d)| d.clone())
    }

    fn geo_of(&self, ip: IpAddr) -> Option<String> {
        // A poisoned lock (a panic while swapping) still holds a whole source: keep answering by it.
        let source = self
            .geoip
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        source.lookup(ip).map(|c| c.to_string())
    }
}

/// A zone prepared once at publish time, so a query only compares strings and clones records.
pub struct Compiled {
    /// The published data.
    pub data: ZoneData,
    apex: Name,
    apex_lc: String,
    hosts_lc: Vec<String>,
    epoch_lc: String,
    soa: Record,
    ns: Record,
}

impl Compiled {
    /// Prepares a zone.
    pub fn new(data: ZoneData) -> Result<Self, DnsError> {
        let n = |s: &str| Name::from_ascii(s).map_err(|e| DnsError::Config(format!("name {s}: {e}")));
        let apex = n(&data.zone)?;
        let mname = n(&format!("ns1.{}", data.zone))?;
        let rname = n(&format!("hostmaster.{}", data.zone))?;
        let serial = (data.epoch & 0xffff_ffff) as u32;
        let soa = Record::from_rdata(
            apex.clone(),
            data.ttl,
            RData::SOA(SOA::new(mname.clone(), rname, serial, 60, 30, 3600, data.ttl)),
        );
        let ns = Record::from_rdata(apex.clone(), data.ttl, RData::NS(NS(mname)));
        Ok(Self {
            apex_lc: data.zone.to_ascii_lowercase(),
            hosts_lc: data.fqdns().iter().map(|h| h.to_ascii_lowercase()).collect(),
            epoch_lc: format!("_azora-epoch.{}", data.zone.to_ascii_lowercase()),
            apex,
            soa,
            ns,
            data,
        })
    }
}

/// What a query resolves to (pure, given zone data and client geography).
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// Answer records.
    pub answers: Vec<Record>,
    /// Authority records (NS at the apex for positive answers, SOA for negative ones).
    pub authority: Vec<Record>,
}

fn pick(targets: &[Target]) -> Vec<&Target> {
    if targets.len() <= 1 {
        return targets.iter().collect();
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return targets.iter().collect();
    }
    let mut roll = rand::rng().random_range(0..total);
    for t in targets {
        if roll < u64::from(t.weight) {
            return vec![t];
        }
        roll -= u64::from(t.weight);
    }
    targets.iter().take(1).collect()
}

/// Resolves one question against a zone for a client geography.
pub fn answer(z: &ZoneData, qname: &Name, qtype: RecordType, geo: Option<&str>) -> Answer {
    match Compiled::new(z.clone()) {
        Ok(c) => answer_compiled(&c, qname, &qname.to_ascii().to_ascii_lowercase(), qtype, geo),
        Err(_) => Answer {
            rcode: ResponseCode::ServFail,
            answers: vec![],
            authority: vec![],
        },
    }
}

fn answer_compiled(c: &Compiled, qname: &Name, q: &str, qtype: RecordType, geo: Option<&str>) -> Answer {
    let z = &c.data;
    let ttl = z.ttl;
    let negative = |rcode| Answer {
        rcode,
        answers: vec![],
        authority: vec![c.soa.clone()],
    };
    let mut answers = Vec::new();
    if q == c.apex_lc {
        match qtype {
            RecordType::SOA => answers.push(c.soa.clone()),
            RecordType::NS => answers.push(c.ns.clone()),
            _ => {}
        }
    }
    if q == c.epoch_lc {
        if qtype == RecordType::TXT {
            answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::TXT(TXT::new(vec![z.epoch.to_string()])),
            ));
        }
        return if answers.is_empty() {
            negative(ResponseCode::NoError)
        } else {
            ok(answers)
        };
    }
    let is_host = c.hosts_lc.iter().any(|h| h == q);
    if is_host && matches!(qtype, RecordType::A | RecordType::AAAA) {
        let targets = geo
            .and_then(|g| z.answers.get(g))
            .or_else(|| z.answers.get("default"));
        for t in pick(targets.map(Vec::as_slice).unwrap_or_default()) {
            if qtype == RecordType::A {
                answers.extend(
                    t.ipv4
                        .iter()
                        .map(|ip| Record::from_rdata(qname.clone(), ttl, RData::A(A(*ip)))),
                );
            } else {
                answers.extend(
                    t.ipv6
                        .iter()
                        .map(|ip| Record::from_rdata(qname.clone(), ttl, RData::AAAA(AAAA(*ip)))),
                );
            }
        }
    }
    if !answers.is_empty() {
        return ok(answers);
    }
    let _ = &c.apex;
    if is_host || q == c.apex_lc {
        negative(ResponseCode::NoError)
    } else {
        negative(ResponseCode::NXDomain)
    }
}

fn ok(answers: Vec<Record>) -> Answer {
    Answer {
        rcode: ResponseCode::NoError,
        answers,
        authority: vec![],
    }
}

/// The hickory request handler.
pub struct GeoDnsHandler {
    zones: Zones,
}

impl GeoDnsHandler {
    fn client_ip(request: &Request) -> IpAddr {
        let ecs = request
            .edns
            .as_ref()
            .and_then(|e: &Edns| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(s.addr()),
                _ => None,
            });
        ecs.unwrap_or_else(|| request.src().ip())
    }
}

#[async_trait::async_trait]
impl RequestHandler for GeoDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut rh: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let builder = {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(edns) = request.edns.as_ref() {
                b.edns(edns);
            }
            b
        };
        let Ok(info) = request.request_info() else {
            meta.response_code = ResponseCode::FormErr;
            return send(&mut rh, builder.build_no_records(meta)).await;
        };
        let qname = info.query.original().name().clone();
        let qtype = info.query.query_type();
        let lower = qname.to_ascii().to_ascii_lowercase();
        let Some(zone) = self.zones.find(&lower) else {
            meta.response_code = ResponseCode::Refused;
            return send(&mut rh, builder.build_no_records(meta)).await;
        };
        let geo = self.zones.geo_of(Self::client_ip(request));
        let a = answer_compiled(&zone, &qname, &lower, qtype, geo.as_deref());
        meta.authoritative = true;
        meta.response_code = a.rcode;
        let none: Vec<Record> = Vec::new();
        let (auth, soa_section): (&[Record], &[Record]) = if a.answers.is_empty() {
            (&none, &a.authority)
        } else {
            (&a.authority, &none)
        };
        let response = builder.build(
            meta,
            a.answers.iter(),
            auth.iter(),
            soa_section.iter(),
            none.iter(),
        );
        send(&mut rh, response).await
    }
}

async fn send<'a, R: ResponseHandler>(
    rh: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match rh.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            warn!(error = %e, "could not send a DNS response");
            let mut meta = Metadata::new(
                0,
                hickory_proto::op::MessageType::Response,
                hickory_proto::op::OpCode::Query,
            );
            meta.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            }
            .into()
        }
    }
}

/// Answers one UDP query (the fast path): decode, resolve against the compiled zone, encode. `None` for
/// anything that is not a query (no answer is sent).
pub fn respond_udp(zones: &Zones, bytes: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let req = Message::from_bytes(bytes).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    let max_payload = req
        .edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, 1232));
    if let Some(edns) = &req.edns {
        let mut out = Edns::new();
        out.set_max_payload(1232);
        out.set_version(edns.version());
        resp.set_edns(out);
    }
    let (Some(q), true) = (
        req.queries.first(),
        req.metadata.op_code == OpCode::Query && req.queries.len() == 1,
    ) else {
        resp.metadata.response_code = if req.metadata.op_code == OpCode::Query {
            ResponseCode::FormErr
        } else {
            ResponseCode::NotImp
        };
        return resp.to_vec().ok();
    };
    resp.add_query(q.clone());
    let lower = q.name().to_ascii().to_ascii_lowercase();
    let Some(zone) = zones.find(&lower) else {
        resp.metadata.response_code = ResponseCode::Refused;
        return resp.to_vec().ok();
    };
    let ecs = req.edns.as_ref().and_then(|e| match e.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => Some(s.addr()),
        _ => None,
    });
    let geo = zones.geo_of(ecs.unwrap_or_else(|| src.ip()));
    let a = answer_compiled(&zone, q.name(), &lower, q.query_type(), geo.as_deref());
    resp.metadata.authoritative = true;
    resp.metadata.response_code = a.rcode;
    resp.add_answers(a.answers);
    resp.add_authorities(a.authority);
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= usize::from(max_payload) {
        return Some(bytes);
    }
    // Too large for UDP: truncated, the client retries over TCP.
    resp.answers.clear();
    resp.authorities.clear();
    resp.metadata.truncation = true;
    resp.to_vec().ok()
}

async fn udp_loop(sock: tokio::net::UdpSocket, zones: Zones) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "dns udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Some(resp) = respond_udp(&zones, &buf[..n], src) {
            let _ = sock.send_to(&resp, src).await;
        }
    }
}

/// The embedded server: UDP fast-path loops (one `SO_REUSEPORT` socket per core, answering inline) and
/// hickory-server for TCP. Dropping it stops serving.
pub struct DnsServer {
    _tcp: Server<GeoDnsHandler>,
    udp: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Resolves when the server stops serving: a UDP worker or the TCP listener ended or panicked. It never
    /// resolves while the server works (the process supervisor treats its end as a failure).
    pub async fn stopped(mut self) {
        let udp = std::mem::take(&mut self.udp);
        let any_udp = futures::future::select_all(udp.into_iter().map(Box::pin));
        tokio::select! {
            _ = any_udp => {}
            _ = self._tcp.block_until_done() => {}
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for h in &self.udp {
            h.abort();
        }
    }
}

/// Starts serving `zones` on `addr`, UDP and TCP.
pub async fn serve(addr: SocketAddr, zones: Zones) -> Result<DnsServer, DnsError> {
    let bind_err = |e: std::io::Error| DnsError::Transport(format!("bind udp {addr}: {e}"));
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DnsError::Transport(format!("bind tcp {addr}: {e}")))?;
    let mut server = Server::new(GeoDnsHandler { zones: zones.clone() });
    server.register_listener(tcp, Duration::from_secs(5), 64);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut udp = Vec::new();
    for _ in 0..workers {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_err)?;
        sock.set_reuse_port(true).map_err(bind_err)?;
        sock.set_nonblocking(true).map_err(bind_err)?;
        sock.bind(&addr.into()).map_err(bind_err)?;
        let sock = tokio::net::UdpSocket::from_std(sock.into()).map_err(bind_err)?;
        udp.push(tokio::spawn(udp_loop(sock, zones.clone())));
    }
    info!(%addr, udp_sockets = workers, "embedded GeoDNS serving (udp, tcp)");
    Ok(DnsServer { _tcp: server, udp })
}

#[cfg(test)]
mod tests;
