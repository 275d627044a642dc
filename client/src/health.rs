//! Whether a node is worth sending to, as mcrouter's TKO ("technical
//! knockout") decides it: a hard failure (the connection refused or
//! reset) marks the node down at once; soft failures (timeouts) mark it
//! down after `soft_limit` in a row; any success clears them. A down node
//! is probed again after a backoff that doubles up to `max_probe_delay`.
//! Plain code: the caller passes the time.

use std::time::{Duration, Instant};

/// When a node is marked down and probed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Timeouts in a row that mark a node down.
    pub soft_limit: u32,
    /// The first wait before a down node is tried again.
    pub probe_delay: Duration,
    /// The longest wait between probes.
    pub max_probe_delay: Duration,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy {
            soft_limit: 3,
            probe_delay: Duration::from_millis(100),
            max_probe_delay: Duration::from_secs(2),
        }
    }
}

/// One node's standing.
#[derive(Clone, Debug, Default)]
pub struct Health {
    soft_failures: u32,
    down: Option<Down>,
}

#[derive(Clone, Copy, Debug)]
struct Down {
    next_probe: Instant,
    delay: Duration,
    /// A probe is out: others keep away until it answers.
    probing: bool,
}

impl Health {
    /// Not marked down.
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }

    /// Whether a request may go to the node now: it is up, or it is down
    /// and its probe is due (the caller that gets true is the probe).
    pub fn admit(&mut self, now: Instant) -> bool {
        match &mut self.down {
            None => true,
            Some(down) if !down.probing && now >= down.next_probe => {
                down.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// A reply came: up, the timeouts forgotten.
    pub fn success(&mut self) {
        self.soft_failures = 0;
        self.down = None;
    }

    /// The connection was refused or broke: down at once.
    pub fn hard_failure(&mut self, policy: &HealthPolicy, now: Instant) {
        self.mark_down(policy, now);
    }

    /// A request timed out: down after `soft_limit` in a row.
    pub fn soft_failure(&mut self, policy: &HealthPolicy, now: Instant) {
        self.soft_failures += 1;
        if self.soft_failures >= policy.soft_limit || self.down.is_some() {
            self.mark_down(policy, now);
        }
    }

    fn mark_down(&mut self, policy: &HealthPolicy, now: Instant) {
        // A failed probe waits twice as long as the last one.
        let delay = match self.down {
            Some(down) => (down.delay * 2).min(policy.max_probe_delay),
            None => policy.probe_delay,
        };
        self.down = Some(Down {
            next_probe: now + delay,
            delay,
            probing: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_failure_marks_down_at_once_and_a_probe_brings_it_back() {
        let policy = HealthPolicy::default();
        let start = Instant::now();
        let mut health = Health::default();
        health.hard_failure(&policy, start);
        assert!(!health.is_up());
        assert!(!health.admit(start + Duration::from_millis(99)));
        assert!(health.admit(start + Duration::from_millis(100)), "the probe");
        assert!(!health.admit(start + Duration::from_millis(101)), "one probe at a time");
        health.success();
        assert!(health.is_up() && health.admit(start));
    }

    #[test]
    fn soft_failures_mark_down_only_in_a_row() {
        let policy = HealthPolicy::default();
        let now = Instant::now();
        let mut health = Health::default();
        health.soft_failure(&policy, now);
        health.soft_failure(&policy, now);
        health.success();
        health.soft_failure(&policy, now);
        health.soft_failure(&policy, now);
        assert!(health.is_up(), "two, then a success, then two");
        health.soft_failure(&policy, now);
        assert!(!health.is_up());
    }

    #[test]
    fn failed_probes_back_off_to_the_cap() {
        let policy = HealthPolicy::default();
        let mut now = Instant::now();
        let mut health = Health::default();
        health.hard_failure(&policy, now);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let mut wait = Duration::ZERO;
            while !health.admit(now + wait) {
                wait += Duration::from_millis(50);
            }
            delays.push(wait.as_millis());
            now += wait;
            health.hard_failure(&policy, now);
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000]);
    }
}
