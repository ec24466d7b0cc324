//! `azora-bench drill`: one DR drill in the drill environment (four regions with API servers and S3, two
//! tenants homed in africa with verified backup copies in europe): africa drained, tenants recovered in
//! europe, backups restored from europe's copies into scratch namespaces, failback. Prints
//! `drill=<name> result=<Passed|Failed> rto_s=<x> rpo_s=<y> failback_s=<z>`.

use std::time::Duration;

use azora_tests::drill;

pub async fn run() -> anyhow::Result<()> {
    let fleet = drill::start().await?;
    let hub = fleet.hub().await?;
    drill::create_drill(&hub, "bench").await?;
    drill::run_now(&hub, "bench", "1").await?;
    let st = drill::wait_run(&hub, "bench", &serde_json::Value::Null, Duration::from_secs(900)).await?;
    let run = &st["lastRun"];
    let secs = |v: &serde_json::Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |ms| format!("{:.1}", ms as f64 / 1000.0))
    };
    let rpo = match (run["backupRpoMs"].as_u64(), run["sentinelRpoMs"].as_u64()) {
        (None, None) => serde_json::Value::Null,
        (a, b) => serde_json::json!(a.unwrap_or(0).max(b.unwrap_or(0))),
    };
    if run["result"] != "Passed" {
        eprintln!("drill message: {}", run["message"]);
    }
    println!(
        "drill=bench result={} rto_s={} rpo_s={} failback_s={}",
        run["result"].as_str().unwrap_or("-"),
        secs(&run["rtoMs"]),
        secs(&rpo),
        secs(&run["failbackMs"])
    );
    Ok(())
}
