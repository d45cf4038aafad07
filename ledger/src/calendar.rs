//! UTC calendar windows from Unix milliseconds, without a date library:
//! days since the epoch ↔ civil dates (Howard Hinnant's algorithms: the only date
//! maths the ledger needs, so no date crate with time zones it must not use), and the
//! wall clock every stored timestamp comes from.

/// Now, in Unix milliseconds (the unit of every timestamp column).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: i64 = 86_400_000;

pub fn minute_start(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_MINUTE) * MS_PER_MINUTE
}

pub fn next_minute(ms: i64) -> i64 {
    minute_start(ms) + MS_PER_MINUTE
}

pub fn day_start(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY) * MS_PER_DAY
}

pub fn next_day(ms: i64) -> i64 {
    day_start(ms) + MS_PER_DAY
}

/// First millisecond of the UTC month containing `ms`.
pub fn month_start(ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    days_from_civil(y, m, 1) * MS_PER_DAY
}

pub fn next_month(ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * MS_PER_DAY
}

/// `2026-11-28 00:00` for a UTC instant.
pub fn format_utc(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let minutes = ms.rem_euclid(MS_PER_DAY) / MS_PER_MINUTE;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        minutes / 60,
        minutes % 60
    )
}

/// A point in time an operator types, in Unix seconds: Unix seconds
/// (`1796083200`), a UTC date (`2026-12-01`) or date and time
/// (`2026-12-01T12:30:00Z`), or a span back from `now_secs` (`36h`, `7d`).
pub fn parse_since(text: &str, now_secs: i64) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    for (suffix, unit) in [("h", 3600), ("d", 86_400)] {
        if let Some(n) = text
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<i64>().ok())
        {
            return now_secs.checked_sub(n.checked_mul(unit)?);
        }
    }
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (text, None),
    };
    let num = |s: &str| s.parse::<i64>().ok();
    let mut ymd = date.splitn(3, '-').map(num);
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut seconds = 0;
    if let Some(time) = time {
        let mut hms = time.splitn(3, ':').map(num);
        let (h, mi, s) = (hms.next()??, hms.next()??, hms.next().unwrap_or(Some(0))?);
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..60).contains(&s) {
            return None;
        }
        seconds = h * 3600 + mi * 60 + s;
    }
    Some(days_from_civil(y, m, d) * 86_400 + seconds)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T13:45:10.123Z
    const LEAP_DAY: i64 = 1_709_214_310_123;

    #[test]
    fn operators_can_type_a_time_several_ways() {
        let now = 1_796_083_200; // 2026-12-01T00:00:00Z
        assert_eq!(parse_since("1796083200", now), Some(now));
        assert_eq!(parse_since("2026-12-01", now), Some(now));
        assert_eq!(parse_since("2026-12-01T12:30:00Z", now), Some(now + 45_000));
        assert_eq!(parse_since("2026-12-01T12:30Z", now), Some(now + 45_000));
        assert_eq!(parse_since("36h", now), Some(now - 36 * 3600));
        assert_eq!(parse_since("7d", now), Some(now - 7 * 86_400));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-12-01T25:00:00Z",
            "2026-12-01T12:00:00",
        ] {
            assert_eq!(parse_since(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn windows_of_a_leap_day() {
        assert_eq!(minute_start(LEAP_DAY), 1_709_214_300_000);
        assert_eq!(day_start(LEAP_DAY), 1_709_164_800_000); // 2024-02-29T00:00Z
        assert_eq!(month_start(LEAP_DAY), 1_706_745_600_000); // 2024-02-01T00:00Z
        assert_eq!(next_month(LEAP_DAY), 1_709_251_200_000); // 2024-03-01T00:00Z
        assert_eq!(next_day(LEAP_DAY), 1_709_251_200_000);
        assert_eq!(format_utc(LEAP_DAY), "2024-02-29 13:45");
    }

    #[test]
    fn december_rolls_into_the_next_year() {
        let dec = 1_734_998_400_000; // 2024-12-24T00:00Z
        assert_eq!(month_start(dec), 1_733_011_200_000); // 2024-12-01
        assert_eq!(next_month(dec), 1_735_689_600_000); // 2025-01-01
    }

    #[test]
    fn round_trips_every_day_for_decades() {
        for day in -20_000..40_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
