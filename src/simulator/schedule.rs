//! Maintenance windows: the subset of AWS cron the simulator understands
//! (daily `cron(M H * * ? *)` and weekly `cron(M H ? * DAY *)`), where a
//! rollout may start executions, and the next occurrences AWS reports as
//! `scheduledJobRollouts`.

use super::clock::EpochMillis;

const MINUTE: i64 = 60_000;
pub(super) const DAY: i64 = 24 * 60 * MINUTE;
const WEEK: i64 = 7 * DAY;

/// A recurring maintenance window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Offset of the start within its day.
    start_in_day: i64,
    /// Day of week (0 = Sunday) for weekly windows; daily when absent.
    weekday: Option<i64>,
    duration: i64,
}

impl Window {
    /// Parses `cron(...)` and a duration; `None` if outside the subset.
    pub fn parse(expression: &str, duration_minutes: i64) -> Option<Self> {
        let inner = expression.strip_prefix("cron(")?.strip_suffix(')')?;
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minute, hour, dom, month, dow, year] = fields.as_slice() else {
            return None;
        };
        let minute: i64 = minute.parse().ok().filter(|m| (0..60).contains(m))?;
        let hour: i64 = hour.parse().ok().filter(|h| (0..24).contains(h))?;
        if *month != "*" || *year != "*" || duration_minutes <= 0 {
            return None;
        }
        let weekday = match (*dom, *dow) {
            ("*", "?") => None,
            ("?", day) => Some(weekday(day)?),
            _ => return None,
        };
        Some(Self {
            start_in_day: hour * 60 * MINUTE + minute * MINUTE,
            weekday,
            duration: duration_minutes * MINUTE,
        })
    }

    /// The start of the latest occurrence at or before `t`.
    fn latest_start(&self, t: EpochMillis) -> EpochMillis {
        let day = t.div_euclid(DAY);
        let mut start = day * DAY + self.start_in_day;
        if let Some(weekday) = self.weekday {
            // 1970-01-01 was a Thursday (4).
            let today = (day + 4).rem_euclid(7);
            start -= (today - weekday).rem_euclid(7) * DAY;
        }
        if start > t {
            start -= if self.weekday.is_some() { WEEK } else { DAY };
        }
        start
    }

    fn period(&self) -> i64 {
        if self.weekday.is_some() { WEEK } else { DAY }
    }

    /// The occurrence containing `t`, as (start, end).
    fn containing(&self, t: EpochMillis) -> Option<(EpochMillis, EpochMillis)> {
        let start = self.latest_start(t);
        (t < start + self.duration).then_some((start, start + self.duration))
    }

    fn next_start_after(&self, t: EpochMillis) -> EpochMillis {
        self.latest_start(t) + self.period()
    }
}

fn weekday(name: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(name))
        .map(|i| i as i64)
        .or_else(|| {
            name.parse::<i64>()
                .ok()
                .filter(|n| (1..=7).contains(n))
                .map(|n| n - 1)
        })
}

/// True when `t` falls inside any window (always true without windows).
pub fn in_window(windows: &[Window], t: EpochMillis) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.containing(t).is_some())
}

/// The wall-clock instant at which `active` milliseconds of window time
/// have passed since `from` (plain `from + active` without windows).
pub fn after_window_time(windows: &[Window], from: EpochMillis, active: i64) -> EpochMillis {
    if windows.is_empty() {
        return from + active;
    }
    let (mut t, mut left) = (from, active);
    // Each pass consumes one window occurrence; a year of weekly windows
    // bounds the walk.
    for _ in 0..(366 * windows.len()) {
        let open = windows
            .iter()
            .filter_map(|w| w.containing(t))
            .map(|(_, end)| end)
            .max();
        match open {
            Some(end) if t + left < end => return t + left,
            Some(end) => {
                left -= end - t;
                t = end;
            }
            None => {
                t = windows
                    .iter()
                    .map(|w| w.next_start_after(t))
                    .min()
                    .unwrap_or(t + DAY);
            }
        }
    }
    t + left
}

/// AWS's scheduling format, `YYYY-MM-DDTHH:MM`, in UTC.
pub fn format(ms: EpochMillis) -> String {
    use aws_smithy_types::{DateTime, date_time::Format};
    let text = DateTime::from_millis(ms)
        .fmt(Format::DateTime)
        .unwrap_or_default();
    text.chars().take(16).collect()
}

/// The next `n` window starts after `t`, earliest first.
pub fn next_starts(windows: &[Window], t: EpochMillis, n: usize) -> Vec<EpochMillis> {
    let mut starts: Vec<EpochMillis> = windows
        .iter()
        .flat_map(|w| {
            let first = w.next_start_after(t);
            (0..n as i64).map(move |k| first + k * w.period())
        })
        .collect();
    starts.sort_unstable();
    starts.dedup();
    starts.truncate(n);
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2030-01-01T00:00:00Z, a Tuesday.
    const JAN_1_2030: i64 = 1_893_456_000_000;

    #[test]
    fn parses_daily_and_weekly_windows_and_rejects_the_rest() {
        assert!(Window::parse("cron(0 2 * * ? *)", 60).is_some());
        assert!(Window::parse("cron(30 23 ? * SUN *)", 60).is_some());
        assert!(Window::parse("cron(30 23 ? * 1 *)", 60).is_some());
        for bad in [
            "cron(0 2 1 * ? *)",
            "rate(1 day)",
            "cron(0 25 * * ? *)",
            "cron(0 2 ? * XYZ *)",
        ] {
            assert_eq!(Window::parse(bad, 60), None, "{bad}");
        }
    }

    #[test]
    fn weekly_windows_land_on_their_weekday() {
        let sunday = Window::parse("cron(0 2 ? * SUN *)", 60).unwrap();
        // The first Sunday 02:00 after Tuesday 2030-01-01 is 2030-01-06.
        assert_eq!(
            sunday.next_start_after(JAN_1_2030),
            JAN_1_2030 + 5 * DAY + 2 * 60 * MINUTE
        );
    }

    #[test]
    fn window_time_skips_the_gaps_between_windows() {
        let daily = [Window::parse("cron(0 2 * * ? *)", 5).unwrap()];
        let two_am = JAN_1_2030 + 2 * 60 * MINUTE;
        assert_eq!(after_window_time(&daily, JAN_1_2030, 0), two_am);
        assert_eq!(
            after_window_time(&daily, JAN_1_2030, 3 * MINUTE),
            two_am + 3 * MINUTE
        );
        assert_eq!(
            after_window_time(&daily, JAN_1_2030, 6 * MINUTE),
            two_am + DAY + MINUTE
        );
        assert!(!in_window(&daily, two_am + 10 * MINUTE));
        assert_eq!(
            next_starts(&daily, JAN_1_2030, 3),
            vec![two_am, two_am + DAY, two_am + 2 * DAY]
        );
    }
}
