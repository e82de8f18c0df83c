//! The per-playbook action budget: at most `maxActionsPerHour` actions started in any
//! sliding hour, counted in memory by this process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sliding-window counters, one per playbook.
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    started: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// A limiter whose budgets refill over `window`.
    pub fn new(window: Duration) -> Self {
        RateLimiter {
            window,
            started: Mutex::new(HashMap::new()),
        }
    }

    /// The hourly limiter playbooks declare.
    pub fn hourly() -> Self {
        Self::new(Duration::from_secs(3600))
    }

    /// Takes one action from the playbook's budget at `now`; `false` when the budget of
    /// the window ending at `now` is spent (and nothing is taken).
    pub fn try_acquire(&self, playbook: &str, max: u32, now: Instant) -> bool {
        // A poisoned lock only means another task panicked mid-update; the timestamps
        // are still a valid (if possibly short) history.
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let times = started.entry(playbook.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= max as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_per_playbook_and_refills_as_the_window_slides() {
        let limiter = RateLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(limiter.try_acquire("soc/a", 2, t0));
        assert!(limiter.try_acquire("soc/a", 2, t0 + Duration::from_secs(30)));
        assert!(!limiter.try_acquire("soc/a", 2, t0 + Duration::from_secs(59)));
        assert!(limiter.try_acquire("soc/b", 2, t0 + Duration::from_secs(59)));
        // The first action leaves the window at t0 + 60 s, the second at t0 + 90 s.
        assert!(limiter.try_acquire("soc/a", 2, t0 + Duration::from_secs(60)));
        assert!(!limiter.try_acquire("soc/a", 2, t0 + Duration::from_secs(89)));
        assert!(limiter.try_acquire("soc/a", 2, t0 + Duration::from_secs(90)));
    }
}
