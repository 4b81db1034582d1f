//! Quiet hours in the customer's own time zone.
//!
//! A campaign does not write or call during its quiet hours, read on the
//! customer's clock: "21:00 to 08:00" is 21:00 in Rome for a customer in
//! Rome and 21:00 in New York for one in New York. A message held back
//! goes out when the window opens ([`QuietHours::opens_at`]).
//!
//! Time zones are IANA names (`Europe/Rome`, `America/New_York`, `UTC`,
//! `Etc/GMT-2`), with their daylight-saving rules: the database is compiled
//! in (`chrono-tz`), so nothing here reads a file or a clock. Around a
//! daylight-saving change a local time may not exist (the clock jumps
//! forward: the window opens at the first instant after the gap) or exist
//! twice (the clock goes back: the earlier instant is taken).

use std::str::FromStr;

use chrono::{Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::time::TimeMs;

/// Seconds in a day.
const DAY_SECS: u32 = 24 * 3600;

/// A time zone, checked: an IANA name the database knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zone(Tz);

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    /// The zone named `name`; `field` names the request field for the
    /// error.
    pub fn parse(field: &str, name: &str) -> Result<Zone> {
        Tz::from_str(name.trim()).map(Zone).map_err(|_| {
            CoreError::invalid(
                field,
                format!(
                    "{name:?} is not an IANA time zone; use a name like \"Europe/Rome\", \"America/New_York\" or \"UTC\""
                ),
            )
        })
    }

    /// The zone's name, as the database spells it.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The wall-clock time at `at`.
    fn local(&self, at: TimeMs) -> NaiveDateTime {
        match self.0.timestamp_millis_opt(at as i64) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.naive_local(),
            // Every UTC instant has exactly one local time.
            LocalResult::None => NaiveDateTime::default(),
        }
    }

    /// The instant the wall clock shows `local`: the earlier one when it
    /// shows it twice, the first instant after the gap when it never does.
    fn instant(&self, local: NaiveDateTime) -> TimeMs {
        let mut probe = local;
        // A gap is at most a few hours (usually one); past a day something
        // is wrong with the database, and the local time as UTC will do.
        for _ in 0..(24 * 60) {
            match self.0.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.timestamp_millis().max(0) as TimeMs;
                }
                LocalResult::None => probe += Duration::minutes(1),
            }
        }
        local.and_utc().timestamp_millis().max(0) as TimeMs
    }
}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Zone, D::Error> {
        let name = String::deserialize(d)?;
        Zone::parse("time_zone", &name).map_err(serde::de::Error::custom)
    }
}

/// A daily window of local time during which nobody is contacted: from
/// `from` (inclusive) to `until` (exclusive), in seconds after local
/// midnight. `from > until` wraps midnight (21:00 to 08:00); `from ==
/// until` is no quiet hours at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub from: u32,
    pub until: u32,
}

impl QuietHours {
    /// No quiet hours.
    pub const NONE: QuietHours = QuietHours { from: 0, until: 0 };

    /// From `from` to `until`, each "HH:MM" or "HH:MM:SS" local time;
    /// `field` names the request field for the error.
    pub fn parse(field: &str, from: &str, until: &str) -> Result<QuietHours> {
        let from = clock_time(&format!("{field}.from"), from)?;
        let until = clock_time(&format!("{field}.until"), until)?;
        Ok(QuietHours { from, until })
    }

    pub fn is_none(&self) -> bool {
        self.from == self.until
    }

    /// Whether it is quiet at `at` in `zone`.
    pub fn is_quiet(&self, at: TimeMs, zone: Zone) -> bool {
        self.contains(second_of_day(zone.local(at)))
    }

    fn contains(&self, s: u32) -> bool {
        if self.from <= self.until {
            self.from <= s && s < self.until
        } else {
            s >= self.from || s < self.until
        }
    }

    /// The first instant from `at` on when it is not quiet in `zone`: `at`
    /// itself if it is not quiet now, else when the window opens (the
    /// coming `until`, local time).
    pub fn opens_at(&self, at: TimeMs, zone: Zone) -> TimeMs {
        let mut t = at;
        // Once, but for a daylight-saving jump that swallows the whole open
        // part of a day: the window then opens the next day.
        for _ in 0..3 {
            if !self.is_quiet(t, zone) {
                return t;
            }
            t = self.window_end(t, zone);
        }
        t
    }

    /// The coming local `until` after `at` (which is quiet), strictly later.
    fn window_end(&self, at: TimeMs, zone: Zone) -> TimeMs {
        let local = zone.local(at);
        let s = second_of_day(local);
        let date = local.date();
        // Quiet since `from` this evening (a window that wraps midnight):
        // it ends tomorrow.
        let day = if self.from > self.until && s >= self.from {
            date.succ_opt().unwrap_or(date)
        } else {
            date
        };
        zone.instant(at_second(day, self.until)).max(at + 1)
    }

    /// The window as `"HH:MM[:SS]"`.
    pub fn describe(&self) -> (String, String) {
        (show(self.from), show(self.until))
    }
}

fn second_of_day(t: NaiveDateTime) -> u32 {
    t.time().num_seconds_from_midnight()
}

fn at_second(day: NaiveDate, s: u32) -> NaiveDateTime {
    let time = NaiveTime::from_num_seconds_from_midnight_opt(s % DAY_SECS, 0).unwrap_or_default();
    day.and_time(time)
}

fn show(s: u32) -> String {
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if sec == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// "HH:MM" or "HH:MM:SS" as seconds after midnight.
fn clock_time(field: &str, v: &str) -> Result<u32> {
    let bad = || {
        CoreError::invalid(
            field,
            format!("{v:?} is not a time of day; write \"HH:MM\" (24-hour clock), e.g. \"21:00\""),
        )
    };
    let parts: Vec<&str> = v.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let n: Vec<u32> = parts
        .iter()
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let (h, m, s) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 2026-01-15 12:00:00 UTC.
    const JAN_15_NOON_UTC: TimeMs = 1_768_478_400_000;
    const HOUR: TimeMs = 3_600_000;

    fn zone(name: &str) -> Zone {
        Zone::parse("time_zone", name).expect("a known zone")
    }

    fn night() -> QuietHours {
        QuietHours::parse("quiet_hours", "21:00", "08:00").expect("valid")
    }

    #[test]
    fn quiet_hours_are_read_on_the_customers_clock() {
        let q = night();
        // 12:00 UTC is 13:00 in Rome (winter), 07:00 in New York, 21:00 in Tokyo.
        assert!(!q.is_quiet(JAN_15_NOON_UTC, zone("Europe/Rome")));
        assert!(q.is_quiet(JAN_15_NOON_UTC, zone("America/New_York")));
        assert!(q.is_quiet(JAN_15_NOON_UTC, zone("Asia/Tokyo")));
        // Open now: now.
        assert_eq!(
            q.opens_at(JAN_15_NOON_UTC, zone("Europe/Rome")),
            JAN_15_NOON_UTC
        );
        // New York, 07:00: opens at 08:00 the same day, an hour from now.
        assert_eq!(
            q.opens_at(JAN_15_NOON_UTC, zone("America/New_York")),
            JAN_15_NOON_UTC + HOUR
        );
        // Tokyo, 21:00: opens at 08:00 tomorrow, eleven hours from now.
        assert_eq!(
            q.opens_at(JAN_15_NOON_UTC, zone("Asia/Tokyo")),
            JAN_15_NOON_UTC + 11 * HOUR
        );
    }

    #[test]
    fn a_window_that_does_not_wrap_midnight() {
        let lunch = QuietHours::parse("q", "12:30", "14:00").expect("valid");
        let utc = Zone::UTC;
        assert!(!lunch.is_quiet(JAN_15_NOON_UTC, utc));
        assert!(lunch.is_quiet(JAN_15_NOON_UTC + HOUR, utc));
        assert_eq!(
            lunch.opens_at(JAN_15_NOON_UTC + HOUR, utc),
            JAN_15_NOON_UTC + 2 * HOUR
        );
        assert!(!QuietHours::NONE.is_quiet(JAN_15_NOON_UTC, utc));
    }

    #[test]
    fn the_window_opens_after_a_daylight_saving_gap() {
        // 2026-03-29: Rome jumps from 02:00 to 03:00. Quiet until 02:30,
        // which does not exist that night: it opens at 03:00 local, 01:00 UTC.
        let q = QuietHours::parse("q", "22:00", "02:30").expect("valid");
        let rome = zone("Europe/Rome");
        let mar_29_0030_utc = 1_774_744_200_000; // 01:30 local (winter time)
        assert!(q.is_quiet(mar_29_0030_utc, rome));
        assert_eq!(q.opens_at(mar_29_0030_utc, rome), 1_774_746_000_000);
    }

    #[test]
    fn bad_times_and_zones_name_the_field() {
        for bad in ["24:00", "9:00", "21:60", "21", "ab:cd", "21:00:61", ""] {
            let e = QuietHours::parse("quiet_hours", bad, "08:00").expect_err(bad);
            assert_eq!(e.field(), Some("quiet_hours.from"), "{bad}");
        }
        let e = Zone::parse("attributes.time_zone", "Mars/Olympus").expect_err("unknown");
        assert_eq!(e.field(), Some("attributes.time_zone"));
        assert_eq!(
            QuietHours::parse("q", "21:00:30", "08:00")
                .expect("seconds are allowed")
                .describe(),
            ("21:00:30".to_owned(), "08:00".to_owned())
        );
    }

    const ZONES: [&str; 6] = [
        "UTC",
        "Europe/Rome",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
    ];

    proptest! {
        /// The window opens no earlier than asked, it is open then, and it
        /// was quiet all the way there: nobody is contacted in the window,
        /// and nobody is held back longer than it lasts.
        #[test]
        fn the_window_opens_at_the_first_open_instant(
            at in 1_700_000_000_000u64..1_900_000_000_000,
            from in 0u32..DAY_SECS,
            until in 0u32..DAY_SECS,
            z in 0usize..ZONES.len(),
        ) {
            let q = QuietHours { from, until };
            let zone = zone(ZONES[z]);
            let opens = q.opens_at(at, zone);
            prop_assert!(opens >= at);
            prop_assert!(!q.is_quiet(opens, zone), "open at {opens}");
            prop_assert!(opens - at <= 25 * HOUR, "held back {} ms", opens - at);
            if opens > at {
                prop_assert!(q.is_quiet(at, zone));
                // Quiet at every minute before it opens.
                let mut t = at;
                while t < opens {
                    prop_assert!(q.is_quiet(t, zone), "open at {t}, before {opens}");
                    t += 60_000;
                }
            }
        }
    }
}
