//! Open-loop arrivals: when each request is meant to be sent, whatever the
//! server does. Latency is measured from these times.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrivals {
    /// Exponential gaps: a Poisson process.
    Poisson,
    /// Equal gaps.
    Even,
}

/// Gaps between intended send times for one connection's share of the rate.
pub struct Schedule {
    arrivals: Arrivals,
    mean_gap_ns: f64,
}

impl Schedule {
    /// `rate` requests per second for this connection.
    pub fn new(arrivals: Arrivals, rate: f64) -> Schedule {
        Schedule {
            arrivals,
            mean_gap_ns: 1e9 / rate,
        }
    }

    pub fn next_gap(&self, rng: &mut SmallRng) -> Duration {
        let gap = match self.arrivals {
            Arrivals::Even => self.mean_gap_ns,
            // Inverse transform: -ln(U) * mean, U in (0, 1].
            Arrivals::Poisson => -(1.0f64 - rng.r#gen::<f64>()).ln() * self.mean_gap_ns,
        };
        Duration::from_nanos(gap as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn arrivals_in(schedule: &Schedule, window: Duration) -> (u64, Vec<Duration>) {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut at = Duration::ZERO;
        let mut count = 0;
        let mut gaps = Vec::new();
        loop {
            let gap = schedule.next_gap(&mut rng);
            at += gap;
            if at > window {
                return (count, gaps);
            }
            gaps.push(gap);
            count += 1;
        }
    }

    #[test]
    fn even_arrivals_hold_the_rate_exactly() {
        let schedule = Schedule::new(Arrivals::Even, 10_000.0);
        let (count, gaps) = arrivals_in(&schedule, Duration::from_secs(10));
        assert_eq!(count, 100_000);
        assert!(gaps.iter().all(|&g| g == Duration::from_micros(100)));
    }

    #[test]
    fn poisson_arrivals_hold_the_rate_on_average() {
        let schedule = Schedule::new(Arrivals::Poisson, 10_000.0);
        let (count, gaps) = arrivals_in(&schedule, Duration::from_secs(100));
        // 1,000,000 expected; a Poisson count has sd 1000.
        assert!((995_000..1_005_000).contains(&count), "{count}");
        // Exponential gaps: the standard deviation equals the mean.
        let mean = gaps.iter().map(|g| g.as_secs_f64()).sum::<f64>() / gaps.len() as f64;
        let variance = gaps.iter().map(|g| (g.as_secs_f64() - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((variance.sqrt() / mean - 1.0).abs() < 0.02);
    }
}
