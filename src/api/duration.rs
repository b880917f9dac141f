//! Durations the way Kubernetes prints them: apimachinery's `util/duration` (AGE, RESIDUAL TIME);
//! and duration flags read as Go's `time.ParseDuration` reads them.

use std::time::Duration;

/// `ShortHumanDuration`: one unit, as `kubeadm certs check-expiration` prints RESIDUAL TIME.
///
/// Up to two seconds in the past still counts as now, as upstream tolerates clock skew;
/// anything older is `<invalid>`.
pub fn short_human(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    if seconds < 60 {
        format!("{seconds}s")
    } else if minutes < 60 {
        format!("{minutes}m")
    } else if hours < 24 {
        format!("{hours}h")
    } else if hours < 24 * 365 {
        format!("{}d", hours / 24)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `HumanDuration`: up to two units, as `kubectl get` prints AGE (`3d15h`, `2y108d`).
pub fn human(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    let s = seconds;
    let m = s / 60;
    let h = m / 60;
    if s < 60 * 2 {
        return format!("{s}s");
    }
    if m < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        };
    }
    if m < 60 * 3 {
        return format!("{m}m");
    }
    if h < 8 {
        let rem = m % 60;
        return if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let rem = h % 24;
        return if rem == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{rem}h", h / 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let days = h / 24 % 365;
        return if days == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{days}d", h / 24 / 365)
        };
    }
    format!("{}y", h / 24 / 365)
}

/// A duration flag as Go's `time.ParseDuration` reads it (`30s`, `1h30m`, `500ms`,
/// fractions such as `1.5h`), for the units flags use (`h`, `m`, `s`, `ms`); `None` for
/// anything else, including an empty string and a number without a unit.
pub fn parse(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let n: f64 = rest[..digits].parse().ok()?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let secs = match &rest[digits..unit_end] {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_go_durations() {
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse(""), None);
        assert_eq!(parse("5"), None);
        assert_eq!(parse("5 minutes"), None);
    }

    #[test]
    fn short_human_matches_upstream_units() {
        assert_eq!(short_human(-5), "<invalid>");
        assert_eq!(short_human(-1), "0s");
        assert_eq!(short_human(59), "59s");
        assert_eq!(short_human(3599), "59m");
        assert_eq!(short_human(86_399), "23h");
        assert_eq!(short_human(364 * 86_400), "364d");
        assert_eq!(short_human(10 * 365 * 86_400 - 1), "9y");
    }

    #[test]
    fn human_matches_kubectl_age() {
        assert_eq!(human(90), "90s");
        assert_eq!(human(5 * 60 + 7), "5m7s");
        assert_eq!(human(2 * 3600 + 60 * 5), "125m");
        assert_eq!(human(5 * 3600 + 60 * 30), "5h30m");
        assert_eq!(human(3 * 86_400 + 15 * 3600), "3d15h");
        assert_eq!(human(30 * 86_400), "30d");
        assert_eq!(human(3 * 365 * 86_400 + 10 * 86_400), "3y10d");
    }
}
