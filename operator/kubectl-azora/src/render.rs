//! Printing: the documents as JSON or YAML, or as tables for people, coloured on a terminal only.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

use azora_api::Time;
use serde::Serialize;

use crate::view::{FailoverView, Status, Timeline};
use crate::{Colour, Output};

/// ANSI colours, or none.
pub struct Palette {
    on: bool,
}

impl Palette {
    /// Colours on a terminal unless NO_COLOR is set (`auto`), or as forced.
    pub fn new(choice: Colour) -> Self {
        let on = match choice {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
        Self { on }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn good(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn warn(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn bad(&self, t: &str) -> String {
        self.paint("31;1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn head(&self, t: &str) -> String {
        self.paint("1", t)
    }

    fn verdict(&self, v: &str) -> String {
        match v {
            "Healthy" => self.good(v),
            "Degraded" => self.warn(v),
            "Down" => self.bad(v),
            "Cordoned" => self.paint("36", v),
            _ => self.dim(v),
        }
    }

    fn yes_no(&self, v: Option<bool>) -> String {
        match v {
            Some(true) => self.good("yes"),
            Some(false) => self.bad("no"),
            None => self.dim("-"),
        }
    }
}

/// Prints a document in the chosen format (`table` calls `people`).
pub fn emit<T: Serialize>(output: Output, doc: &T, people: impl FnOnce() -> String) -> anyhow::Result<()> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(doc)? + "\n",
        Output::Yaml => serde_saphyr::to_string(doc)?,
        Output::Table => people(),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// A table whose columns are as wide as their widest cell (colour codes not counted).
struct Table {
    rows: Vec<Vec<String>>,
}

fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

impl Table {
    fn new(header: &[&str], p: &Palette) -> Self {
        Self {
            rows: vec![header.iter().map(|h| p.head(h)).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| visible_len(c))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    line.push_str(&" ".repeat(widths[i].saturating_sub(visible_len(c)) + 2));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// "12s ago", "3m ago", "2h ago", "4d ago".
pub fn ago(t: Time, now: Time) -> String {
    let s = (now.0.as_second() - t.0.as_second()).max(0);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// "in 5m" for a time ahead, else like `ago`.
fn until(t: Time, now: Time) -> String {
    let s = t.0.as_second() - now.0.as_second();
    if s <= 0 {
        return "due".into();
    }
    match s {
        0..=119 => format!("in {s}s"),
        120..=7199 => format!("in {}m", s / 60),
        7200..=172_799 => format!("in {}h", s / 3600),
        _ => format!("in {}d", s / 86_400),
    }
}

fn dash(o: Option<impl ToString>) -> String {
    o.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn duration_ms(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

fn rpo(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// The status screen.
pub fn status(s: &Status, p: &Palette) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", p.head("REGIONS"));
    let mut t = Table::new(
        &[
            "NAME",
            "CITY",
            "VERDICT",
            "SERVING",
            "OBSERVERS",
            "LATENCY",
            "CLUSTER",
            "VAULT",
            "SINCE",
        ],
        p,
    );
    for r in &s.regions {
        let cluster = match (r.cluster_reachable, &r.cluster_reason) {
            (None, _) => p.dim("-"),
            (Some(true), _) => p.good("reachable"),
            (Some(false), reason) => p.bad(reason.as_deref().unwrap_or("unreachable")),
        };
        t.row(vec![
            r.name.clone(),
            r.city.clone(),
            p.verdict(&r.verdict),
            if r.serving { p.good("yes") } else { "no".into() },
            format!("{}/{} healthy", r.observers_healthy, r.observers),
            r.latency_ms.map_or_else(|| "-".into(), |l| format!("{l}ms")),
            cluster,
            p.yes_no(r.vault_reachable),
            r.since.map_or_else(|| "-".into(), |t| ago(t, s.time)),
        ]);
    }
    t.render(&mut out);

    let _ = writeln!(out, "\n{}", p.head("FAILOVER POLICIES"));
    let mut t = Table::new(
        &[
            "NAME",
            "STRATEGY",
            "ACTIVE",
            "EPOCH",
            "LAST FAILOVER",
            "TOOK",
            "WHEN",
            "MANUAL",
            "READY",
        ],
        p,
    );
    for pol in &s.policies {
        let last = pol.last_failover.as_ref();
        let manual = match &pol.manual {
            None => "-".to_string(),
            Some(m) => {
                let who = m
                    .requested_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default();
                match m.honored {
                    Some(true) => p.warn(&format!("-> {}{who}", m.region)),
                    Some(false) => p.bad(&format!("-> {} refused{who}", m.region)),
                    None => p.dim(&format!("-> {} pending{who}", m.region)),
                }
            }
        };
        let active = if pol.active_regions.len() > 1 {
            pol.active_regions.join(",")
        } else {
            dash(pol.active_region.as_deref())
        };
        let active = if pol.held {
            p.bad(&format!("{active} (held)"))
        } else {
            active
        };
        t.row(vec![
            pol.name.clone(),
            pol.strategy.clone(),
            active,
            pol.epoch.to_string(),
            last.map_or_else(|| "-".into(), failover_summary),
            duration_ms(last.and_then(|l| l.total_ms)),
            last.and_then(|l| l.decided_time)
                .map_or_else(|| "-".into(), |t| ago(t, s.time)),
            manual,
            p.yes_no(pol.ready),
        ]);
    }
    t.render(&mut out);

    let _ = writeln!(out, "\n{}", p.head("TENANTS"));
    let mut t = Table::new(
        &[
            "NAME",
            "HOME",
            "ACTIVE",
            "PLACED",
            "READY",
            "LAST BACKUP",
            "RPO",
            "SECRETS",
            "NEXT ROTATION",
        ],
        p,
    );
    for tn in &s.tenants {
        let secrets = if tn.secrets.total == 0 {
            "-".to_string()
        } else if !tn.secrets.failing.is_empty() {
            p.bad(&format!(
                "{}/{} done, failing: {}",
                tn.secrets.done,
                tn.secrets.total,
                tn.secrets.failing.join(",")
            ))
        } else {
            format!("{}/{} done", tn.secrets.done, tn.secrets.total)
        };
        t.row(vec![
            tn.name.clone(),
            tn.home_region.clone(),
            dash(tn.active_region.as_deref()),
            if tn.placed_regions.is_empty() {
                "-".into()
            } else {
                tn.placed_regions.join(",")
            },
            p.yes_no(tn.ready),
            tn.last_backup
                .as_ref()
                .map_or_else(|| "-".into(), |b| b.name.clone()),
            tn.last_backup
                .as_ref()
                .map_or_else(|| "-".into(), |b| rpo(b.rpo_seconds)),
            secrets,
            tn.secrets
                .next_rotation_time
                .map_or_else(|| "-".into(), |t| until(t, s.time)),
        ]);
    }
    t.render(&mut out);

    if !s.databases.is_empty() {
        let _ = writeln!(out, "\n{}", p.head("DATABASES"));
        let mut t = Table::new(
            &[
                "NAME",
                "ENGINE",
                "PRIMARY",
                "EPOCH",
                "MEMBERS",
                "MAX LAG",
                "REPLICATING",
                "LAST FAILOVER",
                "READY",
            ],
            p,
        );
        for db in &s.databases {
            let members = db
                .members
                .iter()
                .map(|m| {
                    let text = format!(
                        "{}:{}{}",
                        m.region,
                        m.role.to_lowercase(),
                        m.sync_state
                            .as_deref()
                            .map(|s| format!("({s})"))
                            .unwrap_or_default()
                    );
                    if m.reachable {
                        text
                    } else {
                        p.bad(&format!("{text}!"))
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let last = db.last_failover.as_ref().map_or_else(
                || "-".to_string(),
                |f| {
                    format!(
                        "{} -> {} ({}, {})",
                        dash(f.from.as_deref()),
                        dash(f.to.as_deref()),
                        f.reason,
                        f.outcome
                    )
                },
            );
            t.row(vec![
                db.name.clone(),
                db.engine.clone(),
                dash(db.primary_region.as_deref()),
                db.epoch.to_string(),
                if members.is_empty() { "-".into() } else { members },
                dash(db.max_lag.as_deref()),
                p.yes_no(db.replicating),
                last,
                p.yes_no(db.ready),
            ]);
        }
        t.render(&mut out);
    }

    let _ = writeln!(out, "\n{}", p.head("CHAOS AND DRILLS"));
    let rate = s
        .chaos
        .success_rate_percent
        .map_or_else(|| "no runs yet".into(), |r| format!("{r:.1}% succeeded"));
    let _ = writeln!(
        out,
        "chaos: {} experiments, {} runs, {rate}",
        s.chaos.experiments, s.chaos.total_runs
    );
    if s.drills.is_empty() {
        let _ = writeln!(out, "drills: none");
    }
    for d in &s.drills {
        let _ = writeln!(
            out,
            "drill {}: last {} {}, RTO {}, RPO {}",
            d.name,
            dash(d.last_result.as_deref()),
            d.last_run_time
                .map_or_else(|| "never run".into(), |t| ago(t, s.time)),
            d.measured_rto_seconds
                .map_or_else(|| "-".into(), |v| format!("{v}s")),
            d.measured_rpo_seconds
                .map_or_else(|| "-".into(), |v| format!("{v}s")),
        );
    }
    for db in s.databases.iter().filter(|d| d.ready == Some(false)) {
        let _ = writeln!(
            out,
            "{} database {}: {}",
            p.bad("!"),
            db.name,
            db.message.as_deref().unwrap_or("not ready")
        );
    }
    for r in s.regions.iter().filter(|r| r.ready == Some(false)) {
        let _ = writeln!(
            out,
            "{} region {}: {}",
            p.bad("!"),
            r.name,
            r.message.as_deref().unwrap_or("not ready")
        );
    }
    for pol in &s.policies {
        if let Some(m) = pol.manual.as_ref().filter(|m| m.honored == Some(false)) {
            let _ = writeln!(
                out,
                "{} policy {}: manual failover: {}",
                p.bad("!"),
                pol.name,
                m.message.as_deref().unwrap_or("")
            );
        }
    }
    out
}

fn failover_summary(f: &FailoverView) -> String {
    let by = f
        .requested_by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    let state = if f.verified_time.is_some() {
        ""
    } else {
        " (in progress)"
    };
    format!(
        "{} -> {} ({}{by}){state}",
        dash(f.from.as_deref()),
        dash(f.to.as_deref()),
        f.reason
    )
}

fn clock(t: Option<Time>) -> String {
    t.map_or_else(|| "-".into(), |t| t.0.strftime("%H:%M:%S%.3f").to_string())
}

/// The timeline table.
pub fn timeline(t: &Timeline, p: &Palette) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: active {}, epoch {}",
        p.head("POLICY"),
        t.policy,
        dash(t.active_region.as_deref()),
        t.epoch
    );
    if t.failovers.is_empty() {
        let _ = writeln!(out, "no failovers recorded");
        return out;
    }
    let mut table = Table::new(
        &[
            "EPOCH",
            "FROM",
            "TO",
            "REASON",
            "BY",
            "DATE",
            "DETECTED",
            "DECIDED",
            "DNS UPDATED",
            "VERIFIED",
            "TOTAL",
        ],
        p,
    );
    for f in &t.failovers {
        let reason = match f.reason.as_str() {
            "RegionDown" => p.bad(&f.reason),
            "Manual" | "Cordoned" => p.warn(&f.reason),
            _ => f.reason.clone(),
        };
        table.row(vec![
            f.epoch.to_string(),
            dash(f.from.as_deref()),
            dash(f.to.as_deref()),
            reason,
            dash(f.requested_by.as_deref()),
            f.decided_time
                .map_or_else(|| "-".into(), |t| t.0.strftime("%Y-%m-%d").to_string()),
            clock(f.detected_time),
            clock(f.decided_time),
            clock(f.dns_updated_time),
            if f.verified_time.is_some() {
                clock(f.verified_time)
            } else {
                p.warn("pending")
            },
            duration_ms(f.total_ms),
        ]);
    }
    table.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_do_not_count_towards_column_widths() {
        let p = Palette { on: true };
        assert_eq!(visible_len(&p.bad("Down")), 4);
        let mut t = Table::new(&["A", "B"], &p);
        t.row(vec![p.good("Healthy"), "x".into()]);
        t.row(vec!["Down".into(), "y".into()]);
        let mut out = String::new();
        t.render(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "Down     y");
    }

    #[test]
    fn no_colour_means_no_escape_codes() {
        let p = Palette { on: false };
        assert_eq!(p.verdict("Down"), "Down");
        assert!(!p.yes_no(Some(true)).contains('\x1b'));
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = Time("2026-11-30T12:00:00Z".parse().unwrap_or_default());
        let at = |s: &str| Time(s.parse().unwrap_or_default());
        assert_eq!(ago(at("2026-11-30T11:59:50Z"), now), "10s ago");
        assert_eq!(ago(at("2026-11-30T11:50:00Z"), now), "10m ago");
        assert_eq!(ago(at("2026-11-29T12:00:00Z"), now), "24h ago");
        assert_eq!(until(at("2026-11-30T12:05:00Z"), now), "in 5m");
        assert_eq!(until(at("2026-11-30T11:00:00Z"), now), "due");
    }
}
