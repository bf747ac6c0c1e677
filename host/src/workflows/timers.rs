//! Time for the triggers that fire on it: cron schedules and dates of records, in a time zone.
//!
//! Pure computation (no database): when a schedule fires next, and which dates of a date field
//! come round in a window of time. The engine ([`super::engine`]) keeps one timer per timed
//! workflow and calls these when the timer falls due.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use time::{Date, Duration, Month, OffsetDateTime};

/// Parses a cron expression: the five Unix fields (minute, hour, day of month, month, day of
/// week; `0` and `7` are Sunday), or six with seconds first; names (`MON`, `JAN`), lists,
/// ranges, steps, `L`, `W` and `#` as in Vixie cron and croner.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|error| format!("`{text}` is not a cron expression: {error}"))
}

/// Parses an IANA time zone name (`Europe/Istanbul`, `UTC`).
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("`{name}` is not a time zone of the IANA database (e.g. `Europe/Istanbul`, `UTC`)")
    })
}

/// The offset of a zone from UTC now, in minutes (0 for a name that is not a zone).
pub fn utc_offset_minutes(zone: &str) -> i32 {
    use chrono::Offset;
    let Ok(tz) = zone.parse::<Tz>() else {
        return 0;
    };
    tz.offset_from_utc_datetime(&chrono::Utc::now().naive_utc())
        .fix()
        .local_minus_utc()
        / 60
}

/// Parses a time of day, `HH:MM` or `HH:MM:SS`.
pub fn parse_at(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
        .ok()
}

fn to_chrono(moment: OffsetDateTime, tz: Tz) -> chrono::DateTime<Tz> {
    chrono::DateTime::from_timestamp(moment.unix_timestamp(), moment.nanosecond())
        .unwrap_or_default()
        .with_timezone(&tz)
}

fn from_chrono<T: TimeZone>(moment: &chrono::DateTime<T>) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(moment.timestamp())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .replace_nanosecond(moment.timestamp_subsec_nanos())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The first time strictly after `after` that the schedule fires, in `tz`.
pub fn next_cron(cron: &Cron, tz: Tz, after: OffsetDateTime) -> Option<OffsetDateTime> {
    cron.find_next_occurrence(&to_chrono(after, tz), false)
        .ok()
        .map(|next| from_chrono(&next))
}

/// The last time at or before `at` that the schedule fired, in `tz`.
pub fn previous_cron(cron: &Cron, tz: Tz, at: OffsetDateTime) -> Option<OffsetDateTime> {
    cron.find_previous_occurrence(&to_chrono(at, tz), true)
        .ok()
        .map(|previous| from_chrono(&previous))
}

fn to_naive(date: Date) -> NaiveDate {
    NaiveDate::from_ymd_opt(
        date.year(),
        u32::from(u8::from(date.month())),
        date.day().into(),
    )
    .expect("a valid date stays valid")
}

fn from_naive(date: NaiveDate) -> Date {
    use chrono::Datelike;
    Date::from_calendar_date(
        date.year(),
        Month::try_from(date.month() as u8).expect("chrono months are 1 to 12"),
        date.day() as u8,
    )
    .expect("a valid date stays valid")
}

/// The moment of `at` on local `date` in `tz`. A time that occurs twice (the clocks go back)
/// is its first occurrence; a time that does not occur (they go forward) moves on by the gap.
pub fn local_moment(tz: Tz, date: Date, at: NaiveTime) -> OffsetDateTime {
    let naive = NaiveDateTime::new(to_naive(date), at);
    for shift in 0..=4 {
        let candidate = naive + chrono::Duration::minutes(30 * shift);
        if let Some(moment) = tz.from_local_datetime(&candidate).earliest() {
            return from_chrono(&moment);
        }
    }
    // No zone has a gap of two hours; UTC is an answer rather than none.
    from_chrono(&naive.and_utc())
}

/// The local date of `moment` in `tz`.
pub fn local_date(tz: Tz, moment: OffsetDateTime) -> Date {
    from_naive(to_chrono(moment, tz).date_naive())
}

/// The local dates whose `at` moment lies in the window `(after, until]`, as a first and last
/// date, or none.
pub fn dates_in(
    tz: Tz,
    at: NaiveTime,
    after: OffsetDateTime,
    until: OffsetDateTime,
) -> Option<(Date, Date)> {
    if until <= after {
        return None;
    }
    let mut first = local_date(tz, after);
    if local_moment(tz, first, at) <= after {
        first = first.next_day()?;
    }
    let mut last = local_date(tz, until);
    if local_moment(tz, last, at) > until {
        last = last.previous_day()?;
    }
    (first <= last).then_some((first, last))
}

/// The first `at` moment strictly after `after`.
pub fn next_moment(tz: Tz, at: NaiveTime, after: OffsetDateTime) -> OffsetDateTime {
    let date = local_date(tz, after);
    let today = local_moment(tz, date, at);
    if today > after {
        return today;
    }
    date.next_day()
        .map(|next| local_moment(tz, next, at))
        .unwrap_or(today + Duration::days(1))
}

/// The month and day (`-MM-DD`) a yearly date must have to come round on `date`, with February
/// 29 also coming round on February 28 of a year that has no 29th.
pub fn anniversaries(date: Date) -> Vec<String> {
    let mut days = vec![format!("-{:02}-{:02}", u8::from(date.month()), date.day())];
    if date.month() == Month::February && date.day() == 28 && !time::util::is_leap_year(date.year())
    {
        days.push("-02-29".to_owned());
    }
    days
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn tz(name: &str) -> Tz {
        parse_time_zone(name).unwrap()
    }

    #[test]
    fn five_fields_are_unix_cron_with_sunday_as_zero_or_seven() {
        let weekdays_at_nine = parse_cron("0 9 * * 1-5").unwrap();
        // Friday 2026-12-04 10:00 UTC: the next is Monday at 09:00.
        let next = next_cron(
            &weekdays_at_nine,
            tz("UTC"),
            datetime!(2026-12-04 10:00 UTC),
        );
        assert_eq!(next, Some(datetime!(2026-12-07 09:00 UTC)));
        for sunday in ["0 12 * * 0", "0 12 * * 7", "0 12 * * SUN"] {
            let cron = parse_cron(sunday).unwrap();
            let next = next_cron(&cron, tz("UTC"), datetime!(2026-12-02 00:00 UTC));
            assert_eq!(next, Some(datetime!(2026-12-06 12:00 UTC)), "{sunday}");
        }
    }

    #[test]
    fn the_previous_time_is_the_last_one_at_or_before() {
        let cron = parse_cron("0 9 * * *").unwrap();
        let utc = tz("UTC");
        assert_eq!(
            previous_cron(&cron, utc, datetime!(2026-12-02 09:00:30 UTC)),
            Some(datetime!(2026-12-02 09:00 UTC))
        );
        assert_eq!(
            previous_cron(&cron, utc, datetime!(2026-12-02 08:00 UTC)),
            Some(datetime!(2026-12-01 09:00 UTC))
        );
    }

    #[test]
    fn six_fields_start_with_seconds() {
        let cron = parse_cron("*/10 * * * * *").unwrap();
        let next = next_cron(&cron, tz("UTC"), datetime!(2026-12-02 10:00:01 UTC));
        assert_eq!(next, Some(datetime!(2026-12-02 10:00:10 UTC)));
    }

    #[test]
    fn schedules_run_on_the_wall_clock_of_their_time_zone() {
        let cron = parse_cron("0 9 * * *").unwrap();
        // Istanbul is UTC+3 all year.
        let next = next_cron(
            &cron,
            tz("Europe/Istanbul"),
            datetime!(2026-12-02 07:00 UTC),
        );
        assert_eq!(next, Some(datetime!(2026-12-03 06:00 UTC)));
        // New York: 09:00 is 14:00 UTC in winter and 13:00 UTC in summer.
        let ny = tz("America/New_York");
        assert_eq!(
            next_cron(&cron, ny, datetime!(2026-12-02 15:00 UTC)),
            Some(datetime!(2026-12-03 14:00 UTC))
        );
        assert_eq!(
            next_cron(&cron, ny, datetime!(2026-07-02 15:00 UTC)),
            Some(datetime!(2026-07-03 13:00 UTC))
        );
    }

    #[test]
    fn malformed_cron_and_zones_are_refused_by_name() {
        for bad in ["", "* * *", "61 * * * *", "* * * * MOON", "1 2 3 4 5 6 7"] {
            let error = parse_cron(bad).unwrap_err();
            assert!(error.contains("is not a cron expression"), "{bad}: {error}");
        }
        let error = parse_time_zone("Mars/Olympus").unwrap_err();
        assert!(error.contains("Mars/Olympus"), "{error}");
    }

    #[test]
    fn a_time_skipped_by_the_clocks_moves_on_and_a_repeated_one_is_the_first() {
        let ny = tz("America/New_York");
        // 2026-03-08: 02:00 → 03:00; 02:30 does not exist.
        let at = parse_at("02:30").unwrap();
        assert_eq!(
            local_moment(ny, date!(2026 - 03 - 08), at),
            datetime!(2026-03-08 07:00 UTC)
        );
        // 2026-11-01: 01:30 happens twice; the first is EDT (UTC-4).
        let at = parse_at("01:30").unwrap();
        assert_eq!(
            local_moment(ny, date!(2026 - 11 - 01), at),
            datetime!(2026-11-01 05:30 UTC)
        );
    }

    #[test]
    fn the_dates_of_a_window_are_those_whose_moment_it_holds() {
        let utc = tz("UTC");
        let nine = parse_at("09:00").unwrap();
        // Within one day, before and after nine.
        assert_eq!(
            dates_in(
                utc,
                nine,
                datetime!(2026-12-02 08:00 UTC),
                datetime!(2026-12-02 08:59 UTC)
            ),
            None
        );
        assert_eq!(
            dates_in(
                utc,
                nine,
                datetime!(2026-12-02 08:00 UTC),
                datetime!(2026-12-02 09:00 UTC)
            ),
            Some((date!(2026 - 12 - 02), date!(2026 - 12 - 02)))
        );
        // A moment at the window's start was handled by the window before.
        assert_eq!(
            dates_in(
                utc,
                nine,
                datetime!(2026-12-02 09:00 UTC),
                datetime!(2026-12-03 08:00 UTC)
            ),
            None
        );
        // Three days of downtime: three dates.
        assert_eq!(
            dates_in(
                utc,
                nine,
                datetime!(2026-12-01 10:00 UTC),
                datetime!(2026-12-04 09:30 UTC)
            ),
            Some((date!(2026 - 12 - 02), date!(2026 - 12 - 04)))
        );
        // In Istanbul, 09:00 on the 3rd is 06:00 UTC.
        assert_eq!(
            dates_in(
                tz("Europe/Istanbul"),
                nine,
                datetime!(2026-12-02 07:00 UTC),
                datetime!(2026-12-03 06:00 UTC)
            ),
            Some((date!(2026 - 12 - 03), date!(2026 - 12 - 03)))
        );
    }

    #[test]
    fn the_next_moment_is_today_or_tomorrow() {
        let utc = tz("UTC");
        let nine = parse_at("09:00").unwrap();
        assert_eq!(
            next_moment(utc, nine, datetime!(2026-12-02 08:00 UTC)),
            datetime!(2026-12-02 09:00 UTC)
        );
        assert_eq!(
            next_moment(utc, nine, datetime!(2026-12-02 09:00 UTC)),
            datetime!(2026-12-03 09:00 UTC)
        );
    }

    #[test]
    fn february_29_comes_round_on_the_28th_of_other_years() {
        assert_eq!(anniversaries(date!(2026 - 12 - 02)), vec!["-12-02"]);
        assert_eq!(
            anniversaries(date!(2027 - 02 - 28)),
            vec!["-02-28", "-02-29"]
        );
        assert_eq!(anniversaries(date!(2028 - 02 - 28)), vec!["-02-28"]);
        assert_eq!(anniversaries(date!(2028 - 02 - 29)), vec!["-02-29"]);
    }
}
