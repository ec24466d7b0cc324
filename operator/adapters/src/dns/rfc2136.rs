//! RFC 2136 dynamic updates signed with TSIG (IO), for external authoritative servers (Knot, BIND,
//! PowerDNS). Each update replaces the A/AAAA RRsets of the policy's hostnames and the epoch TXT record
//! `_azora-epoch.<zone>` in one message, with a prerequisite that the TXT still holds the epoch this
//! leader last saw — so a deposed leader's late update fails at the server (NXRRSET) instead of rolling
//! answers back. Only the `default` answer is published (external servers have no geography).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DnsError, ZoneData};

/// TSIG key.
#[derive(Clone)]
pub struct TsigKey {
    /// Key name.
    pub name: String,
    /// `hmac-sha256` or `hmac-sha512`.
    pub algorithm: String,
    /// Secret bytes (decoded). Never logged.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn signer(key: &TsigKey) -> Result<TSigner, DnsError> {
    let alg = match key.algorithm.as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => return Err(DnsError::Config(format!("unsupported TSIG algorithm {other}"))),
    };
    let name = Name::from_ascii(&key.name).map_err(|e| DnsError::Config(format!("tsig key name: {e}")))?;
    TSigner::new(key.secret.clone(), alg, name, 300).map_err(|e| DnsError::Config(format!("tsig: {e}")))
}

fn name(s: &str) -> Result<Name, DnsError> {
    Name::from_ascii(s).map_err(|e| DnsError::Config(format!("name {s}: {e}")))
}

/// Builds the update message (unsigned).
pub fn build_update(data: &ZoneData, previous_epoch: Option<u64>) -> Result<Message, DnsError> {
    let zone = name(&data.zone)?;
    let epoch_name = name(&format!("_azora-epoch.{}", data.zone))?;
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Update);
    let mut q = Query::query(zone.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    // Prerequisite (RFC 2136 2.4.2): the epoch TXT RRset holds exactly what we last saw.
    let mut prereqs = Vec::new();
    match previous_epoch {
        Some(e) => {
            let mut r = Record::from_rdata(epoch_name.clone(), 0, RData::TXT(TXT::new(vec![e.to_string()])));
            r.dns_class = DNSClass::IN;
            prereqs.push(r);
        }
        None => {
            // 2.4.5: the RRset does not exist yet.
            let mut r = Record::update0(epoch_name.clone(), 0, RecordType::TXT);
            r.dns_class = DNSClass::NONE;
            prereqs.push(r.into_record_of_rdata());
        }
    }
    let mut updates = Vec::new();
    let delete = |n: &Name, t: RecordType| {
        // 2.5.2: delete an RRset (class ANY, TTL 0, empty rdata).
        let mut r = Record::update0(n.clone(), 0, t);
        r.dns_class = DNSClass::ANY;
        r.into_record_of_rdata()
    };
    updates.push(delete(&epoch_name, RecordType::TXT));
    updates.push(Record::from_rdata(
        epoch_name,
        data.ttl,
        RData::TXT(TXT::new(vec![data.epoch.to_string()])),
    ));
    for host in data.fqdns() {
        let h = name(&host)?;
        updates.push(delete(&h, RecordType::A));
        updates.push(delete(&h, RecordType::AAAA));
        for t in data.answers.get("default").into_iter().flatten() {
            updates.extend(
                t.ipv4
                    .iter()
                    .map(|ip| Record::from_rdata(h.clone(), data.ttl, RData::A(A(*ip)))),
            );
            updates.extend(
                t.ipv6
                    .iter()
                    .map(|ip| Record::from_rdata(h.clone(), data.ttl, RData::AAAA(AAAA(*ip)))),
            );
        }
    }
    msg.add_answers(prereqs);
    msg.add_authorities(updates);
    Ok(msg)
}

/// Sends a signed update over TCP and checks the response code.
pub async fn send_update(
    server: SocketAddr,
    key: &TsigKey,
    data: &ZoneData,
    previous_epoch: Option<u64>,
    timeout: Duration,
) -> Result<(), DnsError> {
    let mut msg = build_update(data, previous_epoch)?;
    let signer = signer(key)?;
    let now = jiff::Timestamp::now().as_second() as u64;
    msg.finalize(&signer, now)
        .map_err(|e| DnsError::Config(format!("sign: {e}")))?;
    let bytes = msg
        .to_bytes()
        .map_err(|e| DnsError::Transport(format!("encode: {e}")))?;
    let exchange = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| DnsError::Transport(format!("connect {server}: {e}")))?;
        let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Transport("update too large".into()))?;
        s.write_all(&len.to_be_bytes())
            .await
            .map_err(|e| DnsError::Transport(e.to_string()))?;
        s.write_all(&bytes)
            .await
            .map_err(|e| DnsError::Transport(e.to_string()))?;
        let mut lb = [0u8; 2];
        s.read_exact(&mut lb)
            .await
            .map_err(|e| DnsError::Transport(format!("read: {e}")))?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lb))];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| DnsError::Transport(format!("read: {e}")))?;
        Message::from_bytes(&buf).map_err(|e| DnsError::Transport(format!("decode: {e}")))
    };
    let resp = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DnsError::Transport("timeout".into()))??;
    match resp.metadata.response_code {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NXRRSet | ResponseCode::YXRRSet => Err(DnsError::StaleEpoch {
            zone: data.zone.clone(),
            offered: data.epoch,
            serving: previous_epoch.map_or(0, |e| e + 1),
        }),
        rc => Err(DnsError::Refused(format!("{server}: {rc}"))),
    }
}
