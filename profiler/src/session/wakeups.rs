//! What a running command waits for besides its own work: the signals that
//! stop it, the side-band tick that keeps the process tracker current, and
//! the drain of the kernel's maps. `record`, `top` and `serve` each wait on
//! one `Wakeups` and decide what a wakeup means for them (serve ignores
//! SIGHUP; record passes it on to COMMAND).

use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Session;

/// One reason to wake up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// SIGINT, SIGTERM or SIGHUP, by number.
    Signal(i32),
    /// Time to apply the side-band's records (`Session::drain_side_band`).
    SideBand,
    /// Time to drain the kernel's count and stack maps.
    DrainMaps,
}

pub struct Wakeups {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    side_band: Interval,
    maps: Interval,
}

impl Wakeups {
    /// Signals are caught from here on. The maps are first drained at
    /// `first_drain`, then every `maps_every`; a drain that ran late delays
    /// the next rather than bursting (the loop must get to see signals).
    pub fn new(session: &Session, first_drain: Instant, maps_every: Duration) -> Result<Self> {
        let mut maps = tokio::time::interval_at(first_drain, maps_every);
        maps.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Wakeups {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            sighup: signal(SignalKind::hangup())?,
            side_band: session.side_band_ticks(),
            maps,
        })
    }

    /// The next wakeup. Cancel-safe: a command may wait on it in a
    /// `select!` beside its own work.
    pub async fn next(&mut self) -> Wakeup {
        tokio::select! {
            _ = self.sigint.recv() => Wakeup::Signal(libc::SIGINT),
            _ = self.sigterm.recv() => Wakeup::Signal(libc::SIGTERM),
            _ = self.sighup.recv() => Wakeup::Signal(libc::SIGHUP),
            _ = self.side_band.tick() => Wakeup::SideBand,
            _ = self.maps.tick() => Wakeup::DrainMaps,
        }
    }

    /// Drains the maps now (someone asked for fresh counts), and the next
    /// regular drain one interval later.
    pub fn drain_maps_now(&mut self) {
        self.maps.reset_immediately();
    }
}
