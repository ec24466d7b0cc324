//! GeoIP from `.mmdb` databases: the real 2018 GeoLite2 City database (PyPI's `maxminddb-geolite2`) read
//! by the operator's reader and checked against an independent reader (PyPI's `maxminddb`), and small
//! databases the test writes itself (PyPI's `mmdb-writer`) served by the real operator's GeoDNS, reloaded
//! when the file changes. Tools from `tests/scripts/install-geoip.sh` (make test-env).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use azora_adapters::geoip::{GeoIp, continent_of_code};
use azora_api::Continent;
use azora_tests::scenario::Scenario;

/// The venv's python with mmdb-writer, maxminddb and maxminddb-geolite2.
fn python() -> anyhow::Result<PathBuf> {
    let p = azora_tests::cache_dir().join("venv-geoip/bin/python");
    anyhow::ensure!(
        p.exists(),
        "{} missing: run tests/scripts/install-geoip.sh (make test-env)",
        p.display()
    );
    Ok(p)
}

fn py(script: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(python()?)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_real_geolite2_database_gives_the_continent_an_independent_reader_gives() -> anyhow::Result<()> {
    let db = py(
        "import geolite2, os; print(os.path.join(os.path.dirname(geolite2.__file__), '_maxminddb_geolite2', 'GeoLite2-City.mmdb'))",
        &[],
    )?;
    let db = PathBuf::from(db.trim());
    let ours = GeoIp::load(&db)?;
    assert!(ours.describe().contains("GeoLite2-City"), "{}", ours.describe());
    // Addresses whose continent is not in doubt.
    for (ip, want) in [
        ("8.8.8.8", Continent::NorthAmerica),
        ("81.2.69.142", Continent::Europe),
        ("41.58.0.1", Continent::Africa),
        ("200.160.2.3", Continent::SouthAmerica),
        ("1.1.1.1", Continent::Oceania),
    ] {
        assert_eq!(ours.lookup(ip.parse()?), Some(want), "{ip}");
    }
    // 2,000 spread addresses, IPv4 and IPv6: the same answer as Python's maxminddb reader.
    let ips: Vec<String> = (0u32..1500)
        .map(|i| std::net::Ipv4Addr::from(i.wrapping_mul(2_863_311)).to_string())
        .chain((0u32..500).map(|i| format!("2a0{}:{:x}::1", i % 10, i * 131)))
        .collect();
    let theirs = py(
        "import sys, maxminddb\nr = maxminddb.open_database(sys.argv[1])\nfor ip in sys.argv[2:]:\n    rec = r.get(ip) or {}\n    print((rec.get('continent') or {}).get('code') or '-')",
        &std::iter::once(db.to_string_lossy().as_ref())
            .chain(ips.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    )?;
    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(theirs.len(), ips.len());
    let mut known = 0;
    for (ip, code) in ips.iter().zip(theirs) {
        let expected = continent_of_code(code);
        assert_eq!(ours.lookup(ip.parse()?), expected, "{ip}: python says {code}");
        known += usize::from(expected.is_some());
    }
    assert!(
        known > 500,
        "only {known} of the addresses are in the database: the sample says nothing"
    );
    Ok(())
}

/// Writes an `.mmdb` (IPv4) mapping each network to a continent code, atomically (write, then rename).
fn write_mmdb(path: &Path, networks: &[(&str, &str)]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut args: Vec<String> = vec![tmp.to_string_lossy().into_owned()];
    for (net, code) in networks {
        args.push(format!("{net}={code}"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    py(
        "import sys\nfrom mmdb_writer import MMDBWriter\nfrom netaddr import IPSet\n\
         w = MMDBWriter(ip_version=4, database_type='GeoLite2-Country', languages=['en'], description='azora test')\n\
         for a in sys.argv[2:]:\n    net, code = a.split('=')\n    w.insert_network(IPSet([net]), {'continent': {'code': code}, 'country': {'iso_code': 'ZZ'}})\n\
         w.to_db_file(sys.argv[1])",
        &argv,
    )?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// What the DNS server at `dns` answers a client in `client`'s /24 (EDNS Client Subnet), via dig.
fn answer_for(dns: std::net::SocketAddr, client: &str) -> anyhow::Result<String> {
    let out = Command::new("dig")
        .args([
            "+short",
            "+time=1",
            "+tries=1",
            &format!("+subnet={client}/24"),
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "api.test.azora.",
            "A",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn geodns_answers_by_an_mmdb_database_and_reloads_it_when_the_file_changes() -> anyhow::Result<()> {
    let mut s = Scenario::start(3).await?;
    let db = s.env.dir.path().join("geo.mmdb");
    write_mmdb(&db, &[("198.51.100.0/24", "AF"), ("203.0.113.0/24", "EU")])?;
    // Simulated regions sit at 0,0: give them their cities' coordinates, so the nearest region differs by
    // continent.
    let regions: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        s.env.hub().client().await?,
        &azora_tests::scenario::ar("Region", "regions"),
    );
    for (name, lat, lon) in [
        ("africa", 6.52, 3.38),
        ("europe", 50.11, 8.68),
        ("asia", 1.35, 103.82),
    ] {
        let patch = serde_json::json!({"spec": {"location": {"latitude": lat, "longitude": lon}}});
        regions
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
    }
    s.policy("20s", serde_json::json!({"strategy": "Geo"})).await?;
    let path = db.to_string_lossy().into_owned();
    s.add_operator(&["--geoip-file", &path])?;
    let dns = s.dns[0];
    let answers = |want_af: &'static str, want_eu: &'static str| async move {
        azora_tests::wait::until(Duration::from_secs(30), || async {
            answer_for(dns, "198.51.100.7").ok().as_deref() == Some(want_af)
                && answer_for(dns, "203.0.113.9").ok().as_deref() == Some(want_eu)
        })
        .await
    };
    assert!(
        answers("127.0.0.11", "127.0.0.12").await,
        "an African client should get africa and a European one europe: {:?} {:?}\n{}",
        answer_for(dns, "198.51.100.7"),
        answer_for(dns, "203.0.113.9"),
        s.log_tail(0, 30)
    );
    assert!(
        s.log_tail(0, usize::MAX).contains("GeoLite2-Country"),
        "the loaded database is logged"
    );

    // The file changes: 198.51.100.0/24 is now in Asia. The running operator picks it up.
    write_mmdb(&db, &[("198.51.100.0/24", "AS"), ("203.0.113.0/24", "EU")])?;
    assert!(
        answers("127.0.0.13", "127.0.0.12").await,
        "the changed database was not reloaded: {:?}\n{}",
        answer_for(dns, "198.51.100.7"),
        s.log_tail(0, 30)
    );

    // A broken file keeps the data in use (and says so); nothing answers differently.
    let seen = s.log_tail(0, usize::MAX).len();
    std::fs::write(&db, b"\xab\xcd\xefMaxMind.com broken")?;
    assert!(
        azora_tests::wait::until(Duration::from_secs(30), || async {
            s.log_tail(0, usize::MAX)
                .get(seen..)
                .is_some_and(|new| new.contains("cannot be used"))
        })
        .await,
        "no warning for a broken GeoIP file:\n{}",
        s.log_tail(0, 30)
    );
    assert_eq!(answer_for(dns, "198.51.100.7")?, "127.0.0.13");
    assert_eq!(answer_for(dns, "203.0.113.9")?, "127.0.0.12");
    Ok(())
}
