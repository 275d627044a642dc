//! Time as the store sees it: memcached's "relative time", whole seconds
//! since the server started, plus the conversion of a client's exptime.

/// Seconds since server start, offset so that 1 is always in the past
/// (memcached's `realtime()` maps already-expired absolute times to 1).
pub type RelTime = u32;

/// memcached's REALTIME_MAXDELTA: exptimes up to 30 days are relative.
pub const MAX_RELATIVE_EXPTIME: i64 = 60 * 60 * 24 * 30;

/// The expiry of an item that never expires.
pub const NEVER: RelTime = 0;

/// The first value the clock reads at start.
pub const CLOCK_START: RelTime = 2;

/// A shard's coarse clock. The server sets `now` once per batch; tests set
/// it by hand, which makes expiry testable without sleeping.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Unix time (seconds) at which `now` read CLOCK_START.
    pub started_unix: i64,
    pub now: RelTime,
}

impl Clock {
    pub fn new(started_unix: i64) -> Clock {
        Clock {
            started_unix,
            now: CLOCK_START,
        }
    }

    /// The current unix time in seconds, per this clock.
    pub fn unix_now(&self) -> i64 {
        self.started_unix + i64::from(self.now - CLOCK_START)
    }

    /// Converts a client's exptime into the expiry stored with an item,
    /// exactly as memcached: 0 never expires, negative is already expired,
    /// up to 30 days is relative, anything larger is an absolute unix time.
    /// 0 in the result means "never".
    pub fn expiry_of(&self, exptime: i64) -> RelTime {
        let exptime = if exptime < 0 { MAX_RELATIVE_EXPTIME + 1 } else { exptime };
        if exptime == 0 {
            return 0;
        }
        if exptime > MAX_RELATIVE_EXPTIME {
            let started = self.started_unix - i64::from(CLOCK_START);
            if exptime <= started + 1 {
                return 1;
            }
            return (exptime - started).min(i64::from(u32::MAX)) as RelTime;
        }
        (exptime + i64::from(self.now)).min(i64::from(u32::MAX)) as RelTime
    }

    /// Whether an item with this stored expiry is dead now.
    #[inline]
    pub fn is_expired(&self, expiry: RelTime) -> bool {
        expiry != 0 && expiry <= self.now
    }

    /// Remaining seconds to live, as meta's `t` flag and `stats` report it;
    /// -1 for "never".
    pub fn ttl_of(&self, expiry: RelTime) -> i64 {
        if expiry == 0 {
            -1
        } else {
            i64::from(expiry.saturating_sub(self.now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_700_000_000;

    #[test]
    fn zero_never_expires() {
        let clock = Clock::new(START);
        assert_eq!(clock.expiry_of(0), 0);
        assert!(!clock.is_expired(0));
    }

    #[test]
    fn relative_and_absolute() {
        let mut clock = Clock::new(START);
        clock.now = 100;
        assert_eq!(clock.expiry_of(10), 110);
        assert_eq!(clock.expiry_of(MAX_RELATIVE_EXPTIME), 100 + MAX_RELATIVE_EXPTIME as u32);
        // Absolute: 50 seconds after start.
        let absolute = START + 50;
        assert_eq!(clock.expiry_of(absolute), CLOCK_START + 50);
        // Absolute in the past: already expired.
        assert!(clock.is_expired(clock.expiry_of(START - 10)));
        assert!(clock.is_expired(clock.expiry_of(MAX_RELATIVE_EXPTIME + 1)));
    }

    #[test]
    fn negative_is_already_expired() {
        let mut clock = Clock::new(START);
        clock.now = 5;
        assert!(clock.is_expired(clock.expiry_of(-1)));
    }

    #[test]
    fn expiry_is_inclusive_of_the_deadline_second() {
        let mut clock = Clock::new(START);
        let expiry = clock.expiry_of(3);
        clock.now += 2;
        assert!(!clock.is_expired(expiry));
        clock.now += 1;
        assert!(clock.is_expired(expiry));
        assert_eq!(clock.unix_now(), START + 3);
    }
}
