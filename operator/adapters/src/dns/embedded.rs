//! The embedded authoritative GeoDNS server (IO), on hickory-server, UDP and TCP. Answers SOA, NS, A, AAAA
//! and TXT (`_azora-epoch.<zone>`) for the published zones; picks the answer by the client's continent from
//! EDNS Client Subnet, else the source address, through the GeoIP table. Publishing refuses data with an
//! older epoch than what is served, so a deposed leader cannot roll answers back.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use azora_core::geo::GeoIpTable;
use hickory_proto::op::{Edns, Metadata, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::Rng;
use tracing::{info, warn};

use super::{DnsError, Target, ZoneData};

/// The zones this replica serves; shared between the server and the publisher.
#[derive(Clone, Default)]
pub struct Zones {
    inner: Arc<RwLock<BTreeMap<String, Arc<ZoneData>>>>,
    geoip: Arc<RwLock<GeoIpTable>>,
}

impl Zones {
    /// Empty zones with a GeoIP table.
    pub fn new(geoip: GeoIpTable) -> Self {
        Self {
            inner: Arc::default(),
            geoip: Arc::new(RwLock::new(geoip)),
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
            if cur.epoch > data.epoch {
                return Err(DnsError::StaleEpoch {
                    zone: key,
                    offered: data.epoch,
                    serving: cur.epoch,
                });
            }
            if **cur == data {
                return Ok(false);
            }
        }
        zones.insert(key, Arc::new(data));
        Ok(true)
    }

    /// Stops serving a zone.
    pub fn remove(&self, zone: &str) {
        if let Ok(mut z) = self.inner.write() {
            z.remove(&zone.to_ascii_lowercase());
        }
    }

    /// The data served for a zone.
    pub fn get(&self, zone: &str) -> Option<Arc<ZoneData>> {
        self.inner.read().ok()?.get(&zone.to_ascii_lowercase()).cloned()
    }

    /// Replaces the GeoIP table.
    pub fn set_geoip(&self, table: GeoIpTable) {
        if let Ok(mut g) = self.geoip.write() {
            *g = table;
        }
    }

    fn find(&self, qname: &str) -> Option<Arc<ZoneData>> {
        let zones = self.inner.read().ok()?;
        zones
            .iter()
            .filter(|(z, _)| qname == z.as_str() || qname.ends_with(&format!(".{z}")))
            .max_by_key(|(z, _)| z.len())
            .map(|(_, d)| d.clone())
    }

    fn geo_of(&self, ip: IpAddr) -> Option<String> {
        self.geoip.read().ok()?.lookup(ip).map(|c| c.to_string())
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

fn soa(z: &ZoneData, apex: &Name) -> Option<Record> {
    let mname = Name::from_ascii(format!("ns1.{}", z.zone)).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{}", z.zone)).ok()?;
    let serial = (z.epoch & 0xffff_ffff) as u32;
    Some(Record::from_rdata(
        apex.clone(),
        z.ttl,
        RData::SOA(SOA::new(mname, rname, serial, 60, 30, 3600, z.ttl)),
    ))
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
    let Ok(apex) = Name::from_ascii(&z.zone) else {
        return Answer {
            rcode: ResponseCode::ServFail,
            answers: vec![],
            authority: vec![],
        };
    };
    let q = qname.to_ascii().to_ascii_lowercase();
    let ttl = z.ttl;
    let negative = |rcode| Answer {
        rcode,
        answers: vec![],
        authority: soa(z, &apex).into_iter().collect(),
    };
    let mut answers = Vec::new();
    if q == z.zone {
        match qtype {
            RecordType::SOA => answers.extend(soa(z, &apex)),
            RecordType::NS => {
                if let Ok(ns) = Name::from_ascii(format!("ns1.{}", z.zone)) {
                    answers.push(Record::from_rdata(apex.clone(), ttl, RData::NS(NS(ns))));
                }
            }
            _ => {}
        }
    }
    if q == format!("_azora-epoch.{}", z.zone) {
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
    let is_host = z.fqdns().iter().any(|h| h.to_ascii_lowercase() == q);
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
    if is_host || q == z.zone {
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
        let a = answer(&zone, &qname, qtype, geo.as_deref());
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

/// Starts serving `zones` on `addr` (UDP and TCP). Runs until the returned server is dropped.
pub async fn serve(addr: SocketAddr, zones: Zones) -> Result<Server<GeoDnsHandler>, DnsError> {
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| DnsError::Transport(format!("bind udp {addr}: {e}")))?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DnsError::Transport(format!("bind tcp {addr}: {e}")))?;
    let mut server = Server::new(GeoDnsHandler { zones });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    info!(%addr, "embedded GeoDNS serving (udp, tcp)");
    Ok(server)
}

#[cfg(test)]
mod tests;
