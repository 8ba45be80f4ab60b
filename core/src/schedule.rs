//! When a sync runs, parsed from the text an operator writes in `schedule` (and the IANA zone
//! in `schedule_timezone`):
//!
//! | text | runs |
//! |---|---|
//! | `manual` (or `trigger-only`, or no schedule) | only when triggered |
//! | `every 15m` (`s`, `m`, `h`, `d`) | every interval after the previous run |
//! | `hourly` | at minute 0 of every hour |
//! | `daily`, `daily at 06:30` | once a day (default 00:00) |
//! | `weekly`, `weekly on friday at 18:00` | once a week (default Monday 00:00) |
//! | `0 9 * * 1-5`, `cron 0 9 * * 1-5` | a cron expression: 5 fields, or 6 with leading seconds, or 7 with a trailing year |
//!
//! Calendar schedules (all but `manual` and `every`) are evaluated in `schedule_timezone`
//! (default UTC) with Vixie cron's daylight-saving rules, as the `croner` crate implements
//! them: a fixed time of day that a spring-forward change skips (02:30 in Europe/Berlin on the
//! last Sunday of March) runs once, at the first instant after the gap; a fixed time a
//! fall-back change repeats runs once, at its first occurrence; schedules with a wildcard or
//! step in the second, minute or hour field (`hourly`, `*/15 * * * *`) follow real elapsed
//! time instead, so `hourly` runs every real hour through both changes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// What is wrong with a schedule. The variant says which setting is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule text (`schedule`).
    #[error("{0}")]
    Expression(String),
    /// The time zone (`schedule_timezone`).
    #[error("{0}")]
    Timezone(String),
}

/// A parsed schedule. Two schedules are equal when they fire at the same instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Manual,
    Every(Duration),
    Calendar {
        cron: Box<Cron>,
        tz: Tz,
        /// The text the operator wrote, kept for messages.
        text: String,
    },
}

const HINT: &str = "use manual, hourly, daily [at HH:MM], weekly [on DAY] [at HH:MM], every N[s|m|h|d], or a cron expression such as '0 9 * * 1-5'";

impl Schedule {
    /// Runs only when triggered.
    pub fn manual() -> Self {
        Self { kind: Kind::Manual }
    }

    /// Parses a sync's `schedule` (None: manual) with its `schedule_timezone` (None: UTC).
    pub fn from_spec(text: Option<&str>, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        match text {
            Some(text) => Self::parse(text, timezone),
            None if timezone.is_some() => Err(ScheduleError::Timezone(
                "a time zone needs a calendar schedule (hourly, daily, weekly or cron)".into(),
            )),
            None => Ok(Self::manual()),
        }
    }

    /// Parses schedule text (see the module documentation) in `timezone` (an IANA name such
    /// as `Europe/Berlin`; None: UTC).
    pub fn parse(text: &str, timezone: Option<&str>) -> Result<Self, ScheduleError> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let calendar = |cron_text: String| -> Result<Self, ScheduleError> {
            let tz = parse_timezone(timezone)?;
            let cron = parse_cron(&cron_text)?;
            Ok(Self {
                kind: Kind::Calendar {
                    cron: Box::new(cron),
                    tz,
                    text: trimmed.to_owned(),
                },
            })
        };
        let no_timezone = |kind: Kind| -> Result<Self, ScheduleError> {
            if timezone.is_some() {
                return Err(ScheduleError::Timezone(format!(
                    "'{trimmed}' does not depend on the time of day; a time zone only applies to hourly, daily, weekly and cron schedules"
                )));
            }
            Ok(Self { kind })
        };
        match words.as_slice() {
            [] => Err(ScheduleError::Expression(format!("empty schedule: {HINT}"))),
            ["manual"] | ["trigger-only"] | ["trigger", "only"] => no_timezone(Kind::Manual),
            ["every", rest @ ..] => {
                no_timezone(Kind::Every(parse_interval(trimmed, &rest.concat())?))
            }
            ["hourly"] => calendar("0 * * * *".into()),
            ["daily"] => calendar("0 0 * * *".into()),
            ["daily", "at", time] => {
                let (h, m) = parse_time_of_day(trimmed, time)?;
                calendar(format!("{m} {h} * * *"))
            }
            ["weekly", rest @ ..] => {
                let (day, time) = match rest {
                    [] => ("mon", None),
                    ["at", time] => ("mon", Some(*time)),
                    ["on", day] => (*day, None),
                    ["on", day, "at", time] => (*day, Some(*time)),
                    _ => {
                        return Err(ScheduleError::Expression(format!(
                            "'{trimmed}': write weekly, weekly on DAY, weekly at HH:MM or weekly on DAY at HH:MM"
                        )))
                    }
                };
                let dow = parse_weekday(trimmed, day)?;
                let (h, m) = match time {
                    Some(t) => parse_time_of_day(trimmed, t)?,
                    None => (0, 0),
                };
                calendar(format!("{m} {h} * * {dow}"))
            }
            ["cron", ..] => calendar(trimmed[4..].trim().to_owned()),
            fields if (5..=7).contains(&fields.len()) || lower.starts_with('@') => {
                calendar(trimmed.to_owned())
            }
            _ => Err(ScheduleError::Expression(format!(
                "'{trimmed}' is not a schedule: {HINT}"
            ))),
        }
    }

    /// True when the schedule never fires by itself.
    pub fn is_manual(&self) -> bool {
        matches!(self.kind, Kind::Manual)
    }

    /// The interval of an `every` schedule.
    pub fn interval(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(d) => Some(d),
            _ => None,
        }
    }

    /// The time zone of a calendar schedule.
    pub fn timezone(&self) -> Option<Tz> {
        match &self.kind {
            Kind::Calendar { tz, .. } => Some(*tz),
            _ => None,
        }
    }

    /// The first instant strictly after `after` at which the schedule fires: for `every`, one
    /// interval after `after` (the previous run); for calendar schedules, the next matching
    /// wall-clock time in the zone; None for manual schedules (and for a cron expression that
    /// never matches again, such as a year in the past).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Manual => None,
            Kind::Every(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| after.checked_add_signed(d)),
            Kind::Calendar { cron, tz, .. } => cron
                .find_next_occurrence(&after.with_timezone(tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Manual => f.write_str("manual"),
            Kind::Every(d) => write!(f, "every {}s", d.as_secs()),
            Kind::Calendar { text, tz, .. } => write!(f, "{text} ({tz})"),
        }
    }
}

fn parse_timezone(timezone: Option<&str>) -> Result<Tz, ScheduleError> {
    match timezone.map(str::trim) {
        None => Ok(Tz::UTC),
        Some(name) => Tz::from_str(name).map_err(|_| {
            ScheduleError::Timezone(format!(
                "'{name}' is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)"
            ))
        }),
    }
}

fn parse_cron(text: &str) -> Result<Cron, ScheduleError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Optional)
        .build()
        .parse(text)
        .map_err(|e| {
            ScheduleError::Expression(format!(
                "'{text}' is not a valid cron expression ({e}); cron fields are minute hour day-of-month month day-of-week, optionally with leading seconds and a trailing year"
            ))
        })
}

/// `15m`, `90s`, `2h`, `1d`, `2 hours`: the part after `every`.
fn parse_interval(text: &str, rest: &str) -> Result<Duration, ScheduleError> {
    let bad = |why: &str| ScheduleError::Expression(format!("'{text}': {why}"));
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (n, unit) = rest.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| bad("expected a number after 'every' (e.g. every 15m)"))?;
    let unit_secs = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        other => return Err(bad(&format!("unknown unit '{other}' (use s, m, h or d)"))),
    };
    match n.checked_mul(unit_secs) {
        Some(0) => Err(bad("the interval must be positive")),
        // Past this, adding the interval to a timestamp overflows chrono's range.
        Some(secs) if secs <= 100 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(bad("the interval is too long (at most 100 years)")),
    }
}

fn parse_time_of_day(text: &str, time: &str) -> Result<(u32, u32), ScheduleError> {
    let parsed = time.split_once(':').and_then(|(h, m)| {
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (h < 24 && m < 60 && time.len() <= 5).then_some((h, m))
    });
    parsed.ok_or_else(|| {
        ScheduleError::Expression(format!(
            "'{text}': '{time}' is not a time of day; write HH:MM, 00:00 to 23:59"
        ))
    })
}

fn parse_weekday(text: &str, day: &str) -> Result<u32, ScheduleError> {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    DAYS.iter()
        .position(|d| *d == day || (day.len() >= 3 && d.starts_with(day)))
        .map(|i| i as u32)
        .ok_or_else(|| {
            ScheduleError::Expression(format!(
                "'{text}': '{day}' is not a day of the week (monday … sunday, or mon … sun)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(schedule: &str, tz: Option<&str>, after: &str) -> DateTime<Utc> {
        Schedule::parse(schedule, tz)
            .unwrap()
            .next_after(utc(after))
            .unwrap()
    }

    /// The first `n` firing instants after `after`.
    fn firings(schedule: &Schedule, after: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut t = utc(after);
        (0..n)
            .map(|_| {
                t = schedule.next_after(t).unwrap();
                t
            })
            .collect()
    }

    #[test]
    fn named_schedules() {
        let at = "2026-05-06T10:20:30Z"; // a Wednesday
        assert_eq!(next("hourly", None, at), utc("2026-05-06T11:00:00Z"));
        assert_eq!(
            next("Hourly", None, "2026-05-06T11:00:00Z"),
            utc("2026-05-06T12:00:00Z")
        );
        assert_eq!(next("daily", None, at), utc("2026-05-07T00:00:00Z"));
        assert_eq!(
            next("daily at 06:30", None, at),
            utc("2026-05-07T06:30:00Z")
        );
        assert_eq!(
            next("daily at 23:59", None, at),
            utc("2026-05-06T23:59:00Z")
        );
        assert_eq!(next("weekly", None, at), utc("2026-05-11T00:00:00Z"));
        assert_eq!(
            next("weekly at 9:05", None, at),
            utc("2026-05-11T09:05:00Z")
        );
        assert_eq!(
            next("weekly on friday", None, at),
            utc("2026-05-08T00:00:00Z")
        );
        assert_eq!(
            next("weekly on Sun at 18:00", None, at),
            utc("2026-05-10T18:00:00Z")
        );
        assert_eq!(
            next("weekly on wed at 10:21", None, at),
            utc("2026-05-06T10:21:00Z")
        );
        assert_eq!(next("every 90s", None, at), utc("2026-05-06T10:22:00Z"));
        assert_eq!(next("every 2 hours", None, at), utc("2026-05-06T12:20:30Z"));
        assert_eq!(
            Schedule::parse("every 15m", None).unwrap().interval(),
            Some(Duration::from_secs(900))
        );
        for manual in ["manual", "trigger-only", "Trigger only"] {
            let s = Schedule::parse(manual, None).unwrap();
            assert!(s.is_manual());
            assert_eq!(s.next_after(utc(at)), None);
        }
        assert!(Schedule::from_spec(None, None).unwrap().is_manual());
    }

    #[test]
    fn cron_expressions() {
        let at = "2026-05-06T10:20:30Z";
        assert_eq!(next("*/15 * * * *", None, at), utc("2026-05-06T10:30:00Z"));
        assert_eq!(
            next("cron 0 9 * * 1-5", None, at),
            utc("2026-05-07T09:00:00Z")
        );
        // Six fields: leading seconds; seven: a trailing year.
        assert_eq!(
            next("45 20 10 * * *", None, at),
            utc("2026-05-06T10:20:45Z")
        );
        assert_eq!(
            next("0 0 0 1 1 * 2030", None, at),
            utc("2030-01-01T00:00:00Z")
        );
        assert_eq!(next("@daily", None, at), utc("2026-05-07T00:00:00Z"));
        // A year that has passed never fires again.
        let past = Schedule::parse("0 0 0 1 1 * 2020", None).unwrap();
        assert_eq!(past.next_after(utc(at)), None);
        // The instant itself is not "after" it.
        assert_eq!(
            next("0 11 * * *", None, "2026-05-06T11:00:00Z"),
            utc("2026-05-07T11:00:00Z")
        );
    }

    #[test]
    fn time_zones() {
        // 09:00 in Berlin is 07:00 UTC in summer, 08:00 in winter.
        assert_eq!(
            next("0 9 * * 1-5", Some("Europe/Berlin"), "2026-05-06T10:00:00Z"),
            utc("2026-05-07T07:00:00Z")
        );
        assert_eq!(
            next(
                "daily at 09:00",
                Some("Europe/Berlin"),
                "2026-12-01T10:00:00Z"
            ),
            utc("2026-12-02T08:00:00Z")
        );
        assert_eq!(
            next("daily", Some("America/New_York"), "2026-07-01T12:00:00Z"),
            utc("2026-07-02T04:00:00Z")
        );
        let s = Schedule::parse("hourly", Some("Asia/Kolkata")).unwrap();
        assert_eq!(s.timezone(), Some(chrono_tz::Asia::Kolkata));
        // Kolkata is UTC+05:30, so its hours start at :30 UTC.
        assert_eq!(
            s.next_after(utc("2026-05-06T10:00:00Z")),
            Some(utc("2026-05-06T10:30:00Z"))
        );
    }

    #[test]
    fn a_fixed_time_skipped_by_spring_forward_runs_once_after_the_gap() {
        // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let s = Schedule::parse("daily at 02:30", Some("Europe/Berlin")).unwrap();
        let fired = firings(&s, "2026-03-27T12:00:00Z", 4);
        assert_eq!(
            fired,
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // the gap: once, at 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
                utc("2026-03-31T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn a_fixed_time_repeated_by_fall_back_runs_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let fired = firings(&s, "2026-10-23T12:00:00Z", 4);
        assert_eq!(
            fired,
            vec![
                utc("2026-10-24T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T00:30:00Z"), // the first 02:30 (CEST) only
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
                utc("2026-10-27T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn hourly_follows_real_hours_through_both_changes() {
        let s = Schedule::parse("hourly", Some("Europe/Berlin")).unwrap();
        for (from, day) in [
            ("2026-03-28T22:00:00Z", "spring"),
            ("2026-10-24T22:00:00Z", "fall"),
        ] {
            let fired = firings(&s, from, 6);
            let start = utc(from);
            for (i, t) in fired.iter().enumerate() {
                assert_eq!(
                    *t,
                    start + chrono::Duration::hours(i as i64 + 1),
                    "{day}: {fired:?}"
                );
            }
        }
    }

    #[test]
    fn weekday_cron_across_a_dst_change_keeps_local_time() {
        let s = Schedule::parse("0 9 * * 1-5", Some("Europe/Berlin")).unwrap();
        // Fri 2026-03-27 (CET) then Mon 2026-03-30 (CEST).
        let fired = firings(&s, "2026-03-27T00:00:00Z", 2);
        assert_eq!(
            fired,
            vec![utc("2026-03-27T08:00:00Z"), utc("2026-03-30T07:00:00Z")]
        );
        let berlin = chrono_tz::Europe::Berlin;
        for t in fired {
            let local = t.with_timezone(&berlin);
            assert_eq!(local.format("%H:%M").to_string(), "09:00");
        }
        assert_eq!(
            berlin
                .with_ymd_and_hms(2026, 3, 30, 9, 0, 0)
                .unwrap()
                .with_timezone(&Utc),
            utc("2026-03-30T07:00:00Z")
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong_and_where() {
        let expr = |text: &str| match Schedule::parse(text, None) {
            Err(ScheduleError::Expression(m)) => m,
            other => panic!("{text}: {other:?}"),
        };
        assert!(
            expr("sometimes").contains("hourly"),
            "{}",
            expr("sometimes")
        );
        assert!(expr("").contains("empty"));
        assert!(expr("every 0s").contains("positive"));
        assert!(expr("every 5y").contains("unit 'y'"));
        assert!(expr("every m").contains("number"));
        assert!(expr("every 99999999999999d").contains("too long"));
        assert!(expr("daily at 25:00").contains("time of day"));
        assert!(expr("daily at 9").contains("HH:MM"));
        assert!(expr("weekly on someday").contains("day of the week"));
        assert!(expr("weekly at").contains("weekly on DAY"));
        assert!(expr("61 * * * *").contains("not a valid cron expression"));
        assert!(expr("cron * * *").contains("not a valid cron expression"));

        let tz = |text: &str, zone: &str| match Schedule::parse(text, Some(zone)) {
            Err(ScheduleError::Timezone(m)) => m,
            other => panic!("{text} {zone}: {other:?}"),
        };
        assert!(tz("hourly", "Mars/Olympus").contains("IANA"));
        assert!(tz("hourly", "CEST+1").contains("IANA"));
        assert!(tz("every 5m", "Europe/Berlin").contains("only applies"));
        assert!(tz("manual", "UTC").contains("only applies"));
        assert!(matches!(
            Schedule::from_spec(None, Some("UTC")),
            Err(ScheduleError::Timezone(_))
        ));
    }
}
