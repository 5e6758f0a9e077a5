//! Where a batch's evaluation spends its time: the core reports the end of each step
//! ([`Phase`]), the host adds its own (parsing, seed expansion, serialization) and times
//! them all with one clock.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use cryptonets_core::network::Phase;

/// Reading the batch file's header and framing.
pub const PARSE: &str = "parse";
/// Expanding the seeded input ciphertexts (their uniform halves) and decoding their limbs.
pub const EXPAND: &str = "expand";
/// Serializing the encrypted logits.
pub const SERIALIZE: &str = "serialize";

/// Every step's name, in the order a batch reaches them.
pub fn names() -> Vec<&'static str> {
    let mut names = vec![PARSE, EXPAND];
    names.extend(Phase::ALL.iter().map(|p| p.name()));
    names.push(SERIALIZE);
    names
}

/// Seconds per step, accumulated over every call: each report charges the time since the
/// previous report (or since [`PhaseClock::new`]) to the step that just ended.
#[derive(Debug)]
pub struct PhaseClock {
    last: Cell<Instant>,
    seconds: RefCell<Vec<(&'static str, f64)>>,
}

impl Default for PhaseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseClock {
    /// A clock started now, every step at zero.
    pub fn new() -> Self {
        Self {
            last: Cell::new(Instant::now()),
            seconds: RefCell::new(names().into_iter().map(|n| (n, 0.0)).collect()),
        }
    }

    /// The step `name` has just ended.
    pub fn done(&self, name: &'static str) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last.replace(now)).as_secs_f64();
        let mut seconds = self.seconds.borrow_mut();
        match seconds.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += elapsed,
            None => seconds.push((name, elapsed)),
        }
    }

    /// A core evaluation step has just ended.
    pub fn phase_done(&self, phase: Phase) {
        self.done(phase.name())
    }

    /// Restarts the clock without charging anything (before the first step of a batch).
    pub fn restart(&self) {
        self.last.set(Instant::now());
    }

    /// Seconds per step, in order, the steps never reached included (at zero).
    pub fn seconds(&self) -> Vec<(&'static str, f64)> {
        self.seconds.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_each_interval_to_the_step_that_ended() {
        let clock = PhaseClock::new();
        std::thread::sleep(std::time::Duration::from_millis(20));
        clock.done(PARSE);
        clock.restart();
        clock.phase_done(Phase::Convolution);
        clock.phase_done(Phase::Convolution);
        let seconds = clock.seconds();
        assert_eq!(seconds.iter().map(|(n, _)| *n).collect::<Vec<_>>(), names());
        let of = |name| seconds.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(of(PARSE) >= 0.02);
        assert!(of(Phase::Convolution.name()) < 0.02);
        assert_eq!(of(SERIALIZE), 0.0);
    }
}
