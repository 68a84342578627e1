//! `/debug/pprof/clock?seconds=N`: the clock reads of the next N seconds as
//! gzipped pprof, the form `record -f pprof` writes. A request opens a
//! window; the read loop feeds it every batch drained after it opened, and
//! hands it over at the first read after it closes (the handler asks for
//! reads at both ends, so the window is N seconds of kernel counts).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::accumulate::Accumulated;
use super::limits::{
    DEFAULT_PROFILE_SECONDS, MAX_PROFILE_REQUESTS, MAX_PROFILE_REQUESTS_PER_CLIENT,
    MAX_PROFILE_SECONDS, READ_INTERVAL,
};
use super::{Batch, Shared};
use crate::aggregate::Profile;
use crate::host::peer::Client;

struct Window {
    opened: Instant,
    closes: Instant,
    stacks: Accumulated,
    reply: oneshot::Sender<Profile>,
}

#[derive(Default)]
pub struct Windows {
    open: Vec<Window>,
}

impl Windows {
    /// Feeds a batch to the windows opened before it started, and answers
    /// those that have closed. Returns reads dropped past the stack cap.
    pub fn feed(&mut self, batch: &Batch, shared: &Shared) -> u64 {
        // A client that went away no longer needs its window.
        self.open.retain(|w| !w.reply.is_closed());
        let mut dropped = 0;
        for window in &mut self.open {
            if batch.since >= window.opened {
                dropped = u64::saturating_add(dropped, window.stacks.add(batch));
            }
        }
        let (done, open) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|w| batch.until >= w.closes);
        self.open = open;
        for mut window in done {
            let duration = batch.until.saturating_duration_since(window.opened);
            let profile = window.stacks.take_profile(&shared.info(), duration);
            let _ = window.reply.send(profile);
        }
        dropped
    }
}

/// `seconds` from the query string, or the sentence a 400 says.
pub fn seconds(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(key, _)| *key == "seconds")
        .map(|(_, value)| value)
        .next_back();
    let Some(value) = value else {
        return Ok(DEFAULT_PROFILE_SECONDS);
    };
    match value.parse::<u64>() {
        Ok(secs) if (1..=MAX_PROFILE_SECONDS).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "seconds must be a whole number from 1 to {MAX_PROFILE_SECONDS}, not `{}`.\n",
            crate::host::printable::printable(&value.chars().take(40).collect::<String>())
        )),
    }
}

/// The profile windows open, per client address: MAX_PROFILE_REQUESTS in
/// all, MAX_PROFILE_REQUESTS_PER_CLIENT each, so one client holding windows
/// of five minutes leaves room for another's.
#[derive(Default)]
pub struct Slots {
    held: Mutex<HashMap<Client, usize>>,
}

/// One open window's slot, given back on drop.
pub struct Slot<'a> {
    slots: &'a Slots,
    client: Client,
}

impl Slots {
    /// A slot for `client`, or the sentence a 429 says.
    fn take(&self, client: Client) -> Result<Slot<'_>, String> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let of_client = held.get(&client).copied().unwrap_or(0);
        if of_client >= MAX_PROFILE_REQUESTS_PER_CLIENT {
            return Err(format!(
                "this client already has {MAX_PROFILE_REQUESTS_PER_CLIENT} profile requests open; try again when one ends.\n"
            ));
        }
        if held.values().sum::<usize>() >= MAX_PROFILE_REQUESTS {
            return Err(format!(
                "{MAX_PROFILE_REQUESTS} profile requests are already being served; try again when one ends.\n"
            ));
        }
        *held.entry(client).or_default() += 1;
        Ok(Slot {
            slots: self,
            client,
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

pub enum Answer {
    Profile(Vec<u8>),
    /// Status and one sentence.
    Refused(u16, String),
}

pub async fn respond(query: Option<&str>, client: Client, shared: &Shared) -> Answer {
    let seconds = match seconds(query) {
        Ok(seconds) => seconds,
        Err(why) => return Answer::Refused(400, why),
    };
    let _slot = match shared.profile_slots.take(client) {
        Ok(slot) => slot,
        Err(why) => return Answer::Refused(429, why),
    };
    let (reply, answer) = oneshot::channel();
    let opened = Instant::now();
    let closes = opened + Duration::from_secs(seconds);
    shared.lock_windows().open.push(Window {
        opened,
        closes,
        stacks: Accumulated::default(),
        reply,
    });
    shared.read_now.notify_one();
    tokio::time::sleep_until(closes.into()).await;
    shared.read_now.notify_one();
    let profile = match tokio::time::timeout(READ_INTERVAL * 5, answer).await {
        Ok(Ok(profile)) => profile,
        _ => {
            return Answer::Refused(
                503,
                "clockprof is stopping, or could not read the kernel's counts in time.\n"
                    .to_string(),
            )
        }
    };
    // gzip and protobuf off the HTTP worker, which keeps answering the
    // other connections meanwhile.
    match tokio::task::spawn_blocking(move || crate::export::pprof::FORMAT.render(&profile)).await {
        Ok(Ok(bytes)) => Answer::Profile(bytes),
        Ok(Err(err)) => Answer::Refused(500, format!("could not render the profile: {err:#}.\n")),
        Err(err) => Answer::Refused(500, format!("could not render the profile: {err}.\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_is_a_whole_number_in_range_defaulting_to_go_s() {
        assert_eq!(seconds(None), Ok(DEFAULT_PROFILE_SECONDS));
        assert_eq!(seconds(Some("")), Ok(DEFAULT_PROFILE_SECONDS));
        assert_eq!(seconds(Some("seconds=3")), Ok(3));
        assert_eq!(seconds(Some("debug=1&seconds=300")), Ok(300));
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=-1",
            "seconds=1.5",
            "seconds=",
            "seconds",
            "seconds=99999999999999999999999",
            "seconds=%31",
        ] {
            let err = seconds(Some(bad)).unwrap_err();
            assert!(err.starts_with("seconds must be"), "{bad}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let forged = seconds(Some("seconds=1\nx")).unwrap_err();
        assert_eq!(forged.lines().count(), 1, "{forged}");
    }

    #[test]
    fn profile_slots_are_shared_out_per_client() {
        let slots = Slots::default();
        let client = |address: &str, user| Client {
            address: address.parse().unwrap(),
            user,
        };
        // Two local users, and a remote client.
        let a = client("127.0.0.1", Some(65534));
        let b = client("127.0.0.1", Some(0));
        let c = client("10.0.0.3", None);
        let held_by_a: Vec<Slot> = (0..MAX_PROFILE_REQUESTS_PER_CLIENT)
            .map(|_| slots.take(a).unwrap())
            .collect();
        assert!(slots.take(a).err().unwrap().starts_with("this client"));
        let held_by_b: Vec<Slot> = (0..MAX_PROFILE_REQUESTS - held_by_a.len())
            .map(|_| slots.take(b).unwrap())
            .collect();
        assert!(slots.take(c).is_err());
        drop(held_by_b);
        let _c = slots.take(c).unwrap();
        drop(held_by_a);
        assert!(slots.held.lock().unwrap().get(&a).is_none());
        let _a = slots.take(a).unwrap();
    }
}
