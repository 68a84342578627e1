//! `/healthz`: 200 while the probes are attached and their counts are read
//! on time, 503 once the reads stall.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::limits::HEALTHY_READ_AGE;

pub struct Health {
    started: Instant,
    /// Milliseconds from `started` to the last read of the kernel's counts.
    last_read_ms: AtomicU64,
}

impl Health {
    /// Probes attached, nothing read yet: healthy for HEALTHY_READ_AGE.
    pub fn new() -> Health {
        Health {
            started: Instant::now(),
            last_read_ms: AtomicU64::new(0),
        }
    }

    pub fn read_done(&self) {
        self.last_read_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The status and the sentence that says it.
    pub fn status(&self) -> (u16, String) {
        let age_ms = (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.last_read_ms.load(Ordering::Relaxed));
        if age_ms <= HEALTHY_READ_AGE.as_millis() as u64 {
            (200, "ok: probes attached, counts read\n".to_string())
        } else {
            (
                503,
                format!(
                    "the kernel's counts were last read {:.1} s ago\n",
                    age_ms as f64 / 1000.0
                ),
            )
        }
    }
}
