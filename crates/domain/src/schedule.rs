//! Application Auto Scaling's schedules: `at(yyyy-mm-ddThh:mm:ss)`,
//! `rate(N minute|minutes|hour|hours|day|days)` and
//! `cron(minutes hours day-of-month month day-of-week year)` as
//! EventBridge writes them, read in the action's time zone. Pure: the time
//! zone is the caller's (a `Zone` converts between instants and the
//! zone's civil time), so the domain reads no time zone database.

/// A time of day on a date, in some zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Civil {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// Converts between epoch seconds and a zone's civil time. For a civil
/// time a change of offset skips or repeats, `epoch` picks one as the
/// zone's rules say.
pub trait Zone {
    fn civil(&self, epoch: i64) -> Civil;
    fn epoch(&self, civil: Civil) -> i64;
}

/// UTC, the default zone.
pub struct Utc;

impl Zone for Utc {
    fn civil(&self, epoch: i64) -> Civil {
        let (y, m, d) = from_days(epoch.div_euclid(86_400));
        let s = epoch.rem_euclid(86_400);
        Civil {
            year: y as i32,
            month: m as u8,
            day: d as u8,
            hour: (s / 3600) as u8,
            minute: (s / 60 % 60) as u8,
            second: (s % 60) as u8,
        }
    }

    fn epoch(&self, c: Civil) -> i64 {
        days(c.year, c.month, c.day) * 86_400
            + i64::from(c.hour) * 3600
            + i64::from(c.minute) * 60
            + i64::from(c.second)
    }
}

/// Days since the epoch of a date (proleptic Gregorian).
fn days(y: i32, m: u8, d: u8) -> i64 {
    let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// 1 (Sunday) to 7 (Saturday), as cron's day of week counts.
fn weekday(y: i32, m: u8, d: u8) -> u8 {
    // 1970-01-01 was a Thursday.
    ((days(y, m, d) + 4).rem_euclid(7) + 1) as u8
}

/// The values a cron field allows, as a set over its range.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    allowed: Vec<bool>,
    lo: u32,
    any: bool,
}

impl Field {
    fn has(&self, v: u32) -> bool {
        v >= self.lo
            && self
                .allowed
                .get((v - self.lo) as usize)
                .copied()
                .unwrap_or(false)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(text: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<Field, String> {
    let mut allowed = vec![false; (hi - lo + 1) as usize];
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(lo + i as u32);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{s} is not a valid {what}"))?;
        if v < lo || v > hi {
            return Err(format!("{what} {v} is outside {lo} to {hi}"));
        }
        Ok(v)
    };
    let any = text == "*" || text == "?";
    for part in text.split(',') {
        if part.contains(['L', 'W', '#']) && !names.iter().any(|n| part.contains(n)) {
            return Err(format!(
                "{part}: L, W and # in cron expressions are not supported by Berth"
            ));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{s} is not a valid step"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None => {
                    let a = value(r)?;
                    (a, if part.contains('/') { hi } else { a })
                }
            },
        };
        if a > b {
            return Err(format!("{range}: the range is backwards"));
        }
        let mut v = a;
        while v <= b {
            allowed[(v - lo) as usize] = true;
            v += step;
        }
    }
    Ok(Field { allowed, lo, any })
}

/// A cron expression's six fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: Field,
    hours: Field,
    dom: Field,
    months: Field,
    dow: Field,
    years: Field,
}

impl Cron {
    fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [mi, h, dom, mo, dow, y] = parts.as_slice() else {
            return Err("a cron expression has six fields: minutes hours day-of-month month day-of-week year".into());
        };
        if (*dom == "?") == (*dow == "?") {
            return Err("one of day-of-month and day-of-week must be ? (and only one)".into());
        }
        Ok(Cron {
            minutes: field(mi, 0, 59, &[], "minute")?,
            hours: field(h, 0, 23, &[], "hour")?,
            dom: field(dom, 1, 31, &[], "day of month")?,
            months: field(mo, 1, 12, &MONTHS, "month")?,
            dow: field(dow, 1, 7, &DAYS, "day of week")?,
            years: field(y, 1970, 2199, &[], "year")?,
        })
    }

    fn day_matches(&self, y: i32, m: u8, d: u8) -> bool {
        self.years.has(y as u32)
            && self.months.has(u32::from(m))
            && (self.dom.any || self.dom.has(u32::from(d)))
            && (self.dow.any || self.dow.has(u32::from(weekday(y, m, d))))
    }

    /// The first civil minute strictly after `after` that matches.
    fn next(&self, after: Civil) -> Option<Civil> {
        let (mut y, mut m, mut d) = (after.year, after.month, after.day);
        let mut first = true;
        // Five years of days at most.
        for _ in 0..(5 * 366) {
            if self.day_matches(y, m, d) {
                for h in 0..24u8 {
                    if !self.hours.has(u32::from(h)) || (first && h < after.hour) {
                        continue;
                    }
                    for mi in 0..60u8 {
                        if !self.minutes.has(u32::from(mi)) {
                            continue;
                        }
                        let c = Civil {
                            year: y,
                            month: m,
                            day: d,
                            hour: h,
                            minute: mi,
                            second: 0,
                        };
                        if c > after {
                            return Some(c);
                        }
                    }
                }
            }
            first = false;
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    At(Civil),
    /// Every so many seconds, counted from the action's start.
    Rate(i64),
    Cron(Cron),
}

impl Schedule {
    /// Parses a schedule expression; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(at) = inner("at(") {
            let bad = || format!("at({at}): expected at(yyyy-mm-ddThh:mm:ss)");
            let (date, time) = at.split_once('T').ok_or_else(bad)?;
            let d: Vec<&str> = date.split('-').collect();
            let t: Vec<&str> = time.split(':').collect();
            let (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
                d.first().unwrap_or(&"").parse::<i32>(),
                d.get(1).unwrap_or(&"").parse::<u8>(),
                d.get(2).unwrap_or(&"").parse::<u8>(),
                t.first().unwrap_or(&"").parse::<u8>(),
                t.get(1).unwrap_or(&"").parse::<u8>(),
                t.get(2).unwrap_or(&"").parse::<u8>(),
            ) else {
                return Err(bad());
            };
            if d.len() != 3
                || t.len() != 3
                || !(1..=12).contains(&month)
                || day == 0
                || day > days_in_month(year, month)
                || hour > 23
                || minute > 59
                || second > 59
            {
                return Err(bad());
            }
            return Ok(Schedule::At(Civil {
                year,
                month,
                day,
                hour,
                minute,
                second,
            }));
        }
        if let Some(rate) = inner("rate(") {
            let bad =
                || format!("rate({rate}): expected rate(N minute|minutes|hour|hours|day|days)");
            let (n, unit) = rate.split_once(' ').ok_or_else(bad)?;
            let n: i64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
            let secs = match (unit.trim(), n) {
                ("minute", 1) | ("minutes", 2..) => 60,
                ("hour", 1) | ("hours", 2..) => 3600,
                ("day", 1) | ("days", 2..) => 86_400,
                _ => return Err(bad()),
            };
            return Ok(Schedule::Rate(n * secs));
        }
        if let Some(cron) = inner("cron(") {
            return Cron::parse(cron)
                .map(Schedule::Cron)
                .map_err(|e| format!("cron({cron}): {e}"));
        }
        Err(format!(
            "{text}: a schedule is at(yyyy-mm-ddThh:mm:ss), rate(N unit) or cron(six fields)"
        ))
    }

    /// The first time the action fires strictly after `after` (epoch
    /// seconds), in `zone`, from `start` (the action's StartTime or
    /// creation) on. None when it never fires again.
    pub fn next(&self, zone: &dyn Zone, start: i64, after: i64) -> Option<i64> {
        match self {
            Schedule::At(c) => Some(zone.epoch(*c)).filter(|t| *t > after),
            Schedule::Rate(every) => {
                if after < start {
                    return Some(start);
                }
                Some(start + ((after - start) / every + 1) * every)
            }
            Schedule::Cron(cron) => {
                let from = after.max(start - 1);
                let c = cron.next(zone.civil(from))?;
                Some(zone.epoch(c))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15 08:00:00 UTC, a Friday.
    const T: i64 = 1_800_000_000;

    #[test]
    fn schedules_parse_and_fire_when_they_say() {
        assert_eq!(weekday(2027, 1, 15), 6, "a Friday");
        let at = Schedule::parse("at(2027-01-15T09:30:00)").expect("at");
        assert_eq!(at.next(&Utc, 0, T), Some(T + 5400));
        assert_eq!(at.next(&Utc, 0, T + 6000), None);
        let rate = Schedule::parse("rate(5 minutes)").expect("rate");
        assert_eq!(rate.next(&Utc, T, T), Some(T + 300));
        assert_eq!(rate.next(&Utc, T, T - 10), Some(T));
        assert!(Schedule::parse("rate(1 minutes)").is_err());
        assert!(Schedule::parse("rate(0 minute)").is_err());
        // Weekdays at 09:15.
        let cron = Schedule::parse("cron(15 9 ? * MON-FRI *)").expect("cron");
        assert_eq!(cron.next(&Utc, 0, T), Some(T + 3600 + 900));
        // From Friday after 09:15, the next is Monday.
        assert_eq!(
            cron.next(&Utc, 0, T + 3600 + 900),
            Some(T + 3 * 86_400 + 3600 + 900)
        );
        let every = Schedule::parse("cron(0/20 * * * ? *)").expect("steps");
        assert_eq!(every.next(&Utc, 0, T + 60), Some(T + 1200));
        assert!(Schedule::parse("cron(0 9 * * * *)")
            .expect_err("both days")
            .contains("?"));
        assert!(Schedule::parse("cron(0 9 L * ? *)")
            .expect_err("L")
            .contains("not supported"));
        assert!(Schedule::parse("cron(61 9 * * ? *)").is_err());
        assert!(Schedule::parse("cron(0 9 * * ?)").is_err());
        assert!(Schedule::parse("at(2027-02-30T00:00:00)").is_err());
        assert!(Schedule::parse("every day").is_err());
        assert_eq!(Utc.civil(Utc.epoch(Utc.civil(T))), Utc.civil(T));
    }
}
