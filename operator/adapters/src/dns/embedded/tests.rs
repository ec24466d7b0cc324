use super::*;
use azora_core::geo::GeoIpTable;
use std::str::FromStr;

fn target(region: &str, ip: &str) -> Target {
    Target {
        region: region.into(),
        ipv4: vec![ip.parse().unwrap()],
        ipv6: vec![],
        weight: 1,
    }
}

fn zone(epoch: u64) -> ZoneData {
    let mut answers = BTreeMap::new();
    answers.insert("default".to_string(), vec![target("africa", "127.0.0.11")]);
    answers.insert("Europe".to_string(), vec![target("europe", "127.0.0.12")]);
    ZoneData {
        zone: "azora.example.".into(),
        hostnames: vec!["api".into(), "@".into()],
        ttl: 5,
        epoch,
        answers,
    }
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn a_records(a: &Answer) -> Vec<String> {
    a.answers.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn answers_by_client_geography_with_default_fallback() {
    let z = zone(1);
    assert_eq!(
        a_records(&answer(&z, &name("api.azora.example."), RecordType::A, None)),
        vec!["127.0.0.11"]
    );
    assert_eq!(
        a_records(&answer(
            &z,
            &name("API.Azora.Example."),
            RecordType::A,
            Some("Europe")
        )),
        vec!["127.0.0.12"]
    );
    assert_eq!(
        a_records(&answer(
            &z,
            &name("api.azora.example."),
            RecordType::A,
            Some("Asia")
        )),
        vec!["127.0.0.11"]
    );
    assert_eq!(
        a_records(&answer(&z, &name("azora.example."), RecordType::A, None)),
        vec!["127.0.0.11"]
    );
}

#[test]
fn unknown_names_are_nxdomain_with_soa_and_missing_types_are_nodata() {
    let z = zone(7);
    let nx = answer(&z, &name("nope.azora.example."), RecordType::A, None);
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
    assert!(matches!(nx.authority[0].data, RData::SOA(_)));
    let nodata = answer(&z, &name("api.azora.example."), RecordType::AAAA, None);
    assert_eq!((nodata.rcode, nodata.answers.len()), (ResponseCode::NoError, 0));
}

#[test]
fn soa_serial_and_epoch_txt_carry_the_fencing_epoch() {
    let z = zone(42);
    let s = answer(&z, &name("azora.example."), RecordType::SOA, None);
    match &s.answers[0].data {
        RData::SOA(soa) => assert_eq!(soa.serial, 42),
        other => panic!("{other:?}"),
    }
    let t = answer(&z, &name("_azora-epoch.azora.example."), RecordType::TXT, None);
    assert_eq!(a_records(&t), vec!["42"]);
}

#[test]
fn publishing_an_older_epoch_is_refused() {
    let zones = Zones::new(GeoIpTable::default());
    assert!(zones.publish(zone(5)).unwrap());
    assert!(!zones.publish(zone(5)).unwrap(), "same data is no change");
    let mut late = zone(4);
    late.answers
        .insert("default".into(), vec![target("asia", "127.0.0.13")]);
    match zones.publish(late) {
        Err(DnsError::StaleEpoch {
            offered: 4,
            serving: 5,
            ..
        }) => {}
        other => panic!("late write accepted: {other:?}"),
    }
    assert_eq!(zones.get("azora.example.").unwrap().epoch, 5);
}

#[test]
fn weighted_targets_share_queries_by_weight() {
    let mut z = zone(1);
    let mut heavy = target("europe", "127.0.0.12");
    heavy.weight = 9;
    z.answers
        .insert("default".into(), vec![target("africa", "127.0.0.11"), heavy]);
    let eu = (0..1000)
        .filter(|_| {
            a_records(&answer(&z, &name("api.azora.example."), RecordType::A, None)) == ["127.0.0.12"]
        })
        .count();
    assert!((800..=980).contains(&eu), "europe got {eu} of 1000 at weight 9:1");
}

#[tokio::test]
async fn the_server_answers_real_queries_and_moves_with_a_newer_epoch() {
    let zones = Zones::new(GeoIpTable::default());
    zones.publish(zone(1)).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _server = serve(addr, zones.clone()).await.unwrap();
    let timeout = Duration::from_secs(2);
    let got = crate::dns::verify::resolve_a(addr, "api.azora.example.", timeout)
        .await
        .unwrap();
    assert_eq!(got, vec!["127.0.0.11".parse::<std::net::Ipv4Addr>().unwrap()]);
    let mut moved = zone(2);
    moved
        .answers
        .insert("default".into(), vec![target("europe", "127.0.0.12")]);
    zones.publish(moved).unwrap();
    let waited = crate::dns::verify::until_answers(
        &[addr],
        "api.azora.example.",
        &["127.0.0.12".parse().unwrap()],
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(waited < Duration::from_secs(3));
}

#[test]
fn udp_fast_path_answers_by_edns_client_subnet() {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::ClientSubnet;
    use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
    let zones = Zones::new(GeoIpTable::parse("198.51.100.0/24 Europe").unwrap());
    zones.publish(zone(3)).unwrap();
    let query = |ecs: Option<&str>| {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(name("api.azora.example."), RecordType::A));
        if let Some(net) = ecs {
            let mut e = Edns::new();
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(net.parse().unwrap(), 24, 0)));
            m.set_edns(e);
        }
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let resp = Message::from_bytes(&respond_udp(&zones, &m.to_bytes().unwrap(), src).unwrap()).unwrap();
        assert!(resp.metadata.authoritative);
        assert_eq!(resp.metadata.id, 7);
        resp.answers
            .iter()
            .map(|r| r.data.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(query(None), vec!["127.0.0.11"], "unknown client: default answer");
    assert_eq!(
        query(Some("198.51.100.0")),
        vec!["127.0.0.12"],
        "a European client subnet gets europe"
    );
    assert_eq!(query(Some("203.0.113.0")), vec!["127.0.0.11"]);
}
