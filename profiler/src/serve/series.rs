//! Which label sets get a series of their own: at most MAX_SERIES at once,
//! each kept while it has reads and dropped once idle for `--series-ttl`, so
//! the cap holds the processes that run now. A user renaming processes
//! (`prctl(PR_SET_NAME)`) can fill the cap for a while, but not for good:
//! once those names go quiet, new processes get their own names again.
//! The metrics (per family) and the pushes each keep one.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct Series<K> {
    cap: usize,
    ttl: Duration,
    /// Every label set handed out, with its last read.
    last_read: HashMap<K, Instant>,
    /// The catch-all label sets past the cap (one per source and clock),
    /// which take no room under it.
    catch_all: HashMap<K, Instant>,
}

impl<K: Hash + Eq + Clone> Series<K> {
    pub fn new(cap: usize, ttl: Duration) -> Series<K> {
        Series {
            cap,
            ttl,
            last_read: HashMap::new(),
            catch_all: HashMap::new(),
        }
    }

    /// Whether `key` has (or now gets) a series of its own; read at `now`.
    pub fn admit(&mut self, key: &K, now: Instant) -> bool {
        if let Some(last) = self.last_read.get_mut(key) {
            *last = now;
            return true;
        }
        if self.last_read.len() >= self.cap {
            return false;
        }
        self.last_read.insert(key.clone(), now);
        true
    }

    /// Keeps `key`, a catch-all series for what is past the cap, outside
    /// the cap; read at `now`.
    pub fn keep(&mut self, key: &K, now: Instant) {
        self.catch_all.insert(key.clone(), now);
    }

    /// Drops the label sets without reads for the TTL, and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<K> {
        let ttl = self.ttl;
        let mut gone = Vec::new();
        for map in [&mut self.last_read, &mut self.catch_all] {
            map.retain(|key, last| {
                let live = now.saturating_duration_since(*last) < ttl;
                if !live {
                    gone.push(key.clone());
                }
                live
            });
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_live_keys_and_idle_ones_make_room() {
        let start = Instant::now();
        let ttl = Duration::from_secs(600);
        let mut series = Series::new(2, ttl);
        assert!(series.admit(&"a", start));
        assert!(series.admit(&"b", start));
        assert!(!series.admit(&"c", start));
        series.keep(&"other", start);
        // "a" keeps reading; "b" goes quiet.
        let later = start + ttl / 2;
        assert!(series.admit(&"a", later));
        assert!(series.expire(later).is_empty());
        let past = start + ttl;
        let mut gone = series.expire(past);
        gone.sort();
        assert_eq!(gone, vec!["b", "other"]);
        assert!(series.admit(&"c", past));
        assert!(!series.admit(&"d", past));
        assert!(series.admit(&"a", past));
    }
}
