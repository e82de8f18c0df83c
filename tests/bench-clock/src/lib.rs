//! What the benchmarks read about the machine beside the wall clock.
//!
//! The development and CI machines are shared, so the wall clock also counts the time
//! other processes held the core; the benchmarks therefore also report rates per second of
//! their own CPU time. That time is read from the POSIX CPU-time clocks
//! (`clock_gettime`), which count in nanoseconds: the scheduler statistics in
//! `/proc/thread-self/schedstat`, read before, advance only at each timer tick on some
//! kernels (every 4 ms on the VM of 5 December 2026), a tenth of a pass over the Windows
//! events. The standard library has no per-thread CPU clock, hence `libc`.

use std::time::Duration;

/// CPU time this thread has run, or `None` where the clock is not available.
pub fn thread_cpu() -> Option<Duration> {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process: every thread, those already ended included (a large
/// feed loads on several threads, so one thread's time undercounts it).
pub fn process_cpu() -> Option<Duration> {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let status = unsafe { libc::clock_gettime(clock, &mut now) };
    if status != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

/// The 1, 5 and 15 minute load averages as /proc/loadavg writes them, or "" off Linux.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Resident set size of this process in KiB (Linux), or `None` where unreadable.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_is_finer_than_a_scheduler_tick() {
        // Successive readings around a little work: a clock that advances only at the
        // timer tick (1 – 10 ms) would show no step below a millisecond.
        let mut smallest = Duration::MAX;
        let mut last = thread_cpu().expect("a thread CPU clock on Linux");
        let mut x = 0u64;
        for _ in 0..10_000 {
            for _ in 0..1_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
            let now = thread_cpu().unwrap();
            if now > last {
                smallest = smallest.min(now - last);
            }
            last = now;
        }
        assert!(
            smallest < Duration::from_millis(1),
            "smallest step {smallest:?}"
        );
        assert!(process_cpu().unwrap() >= last);
    }

    #[test]
    fn memory_and_load_are_read_on_linux() {
        assert!(rss_kib().is_some_and(|kib| kib > 0));
        assert_eq!(load_average().split(' ').count(), 3);
    }
}
