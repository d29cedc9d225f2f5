//! Times and durations on the command line: RFC 3339, Unix seconds, `now`, `now-1h`;
//! Prometheus durations (`1h30m`) or seconds.

use anyhow::{bail, Context};

/// The wall clock in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the epoch of a `--time`-style flag, relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let (sign, dur) = match rest.split_at(1) {
            ("-", d) => (-1, d),
            ("+", d) => (1, d),
            _ => bail!("bad relative time {s:?}: expected now, now-DURATION or now+DURATION"),
        };
        return Ok(now_ms + sign * parse_duration(dur)?);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            bail!("bad time {s:?}");
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("bad time {s:?}: expected RFC 3339, Unix seconds or now-DURATION"))?;
    Ok(t.timestamp_millis())
}

/// Milliseconds of a Prometheus duration (`1h30m`, `15s`) or a number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok((secs * 1000.0).round() as i64);
        }
    }
    match promql::parse(s) {
        Ok(promql::Expr::Number(n)) if n.duration => Ok((n.value * 1000.0).round() as i64),
        _ => bail!("bad duration {s:?}: expected e.g. 15s, 1h30m or a number of seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("now", 5_000).unwrap(), 5_000);
        assert_eq!(parse_time("now-1m", 120_000).unwrap(), 60_000);
        assert_eq!(parse_time("1700000000.5", 0).unwrap(), 1_700_000_000_500);
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0).unwrap(), 1_700_000_000_000);
        assert!(parse_time("yesterday", 0).is_err());
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("15").unwrap(), 15_000);
        assert!(parse_duration("fast").is_err());
    }
}
