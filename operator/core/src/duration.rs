//! Parsing of the API's duration strings (`500ms`, `5s`, `10m`, `24h`, `30d`, `1h30m`) and cron schedules.
//! Pure, no IO.

use std::time::Duration;

use croner::Cron;

/// A duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: use digits with ms, s, m, h or d, e.g. 5s, 30d, 1h30m")]
pub struct DurationError {
    /// The rejected input.
    pub input: String,
}

/// Parses `5s`, `10m`, `1h30m`, `30d`, `250ms`. Zero is allowed; callers enforce their own minimum.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    if input.is_empty() {
        return Err(err());
    }
    let bytes = input.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err());
        }
        let n: u64 = input[start..i].parse().map_err(|_| err())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let part = match &input[unit_start..i] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(part).ok_or_else(err)?;
    }
    Ok(total)
}

/// A cron expression that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {input:?}: {reason}")]
pub struct CronError {
    /// The rejected input.
    pub input: String,
    /// Why.
    pub reason: String,
}

/// Parses a five-field cron expression (UTC).
pub fn parse_cron(input: &str) -> Result<Cron, CronError> {
    if input.split_whitespace().count() != 5 {
        return Err(CronError {
            input: input.into(),
            reason: "expected five fields".into(),
        });
    }
    input.parse::<Cron>().map_err(|e| CronError {
        input: input.into(),
        reason: e.to_string(),
    })
}

/// The next time a schedule fires strictly after `after`.
pub fn next_run(cron: &Cron, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let from = chrono::DateTime::<chrono::Utc>::from_timestamp(after.as_second(), 0)?;
    let next = cron.find_next_occurrence(&from, false).ok()?;
    jiff::Timestamp::from_second(next.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_compounds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn rejects_garbage_units_and_empty() {
        for bad in ["", "5", "s", "5x", "5 s", "-5s", "5s3", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cron_needs_five_valid_fields() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("0 4 1 * *").is_ok());
        assert!(parse_cron("0 3 * *").is_err());
        assert!(parse_cron("61 3 * * *").is_err());
        assert!(parse_cron("every day").is_err());
    }

    #[test]
    fn next_daily_run_is_the_coming_three_am_utc() {
        let cron = parse_cron("0 3 * * *").unwrap();
        let after: jiff::Timestamp = "2026-11-22T02:10:00Z".parse().unwrap();
        let next = next_run(&cron, after).unwrap();
        assert_eq!(next.to_string(), "2026-11-22T03:00:00Z");
        let after: jiff::Timestamp = "2026-11-22T03:00:00Z".parse().unwrap();
        assert_eq!(
            next_run(&cron, after).unwrap().to_string(),
            "2026-11-23T03:00:00Z"
        );
    }
}
