//! Simulated network paths: delay, jitter, loss (Bernoulli or Gilbert–Elliott bursts),
//! duplication and reordering, each path with its own seeded randomness.

use crate::rng::Rng;

/// How a path's delay varies around its base.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Jitter {
    /// No variation.
    None,
    /// Uniform in `base ± amplitude` (seconds); never below zero.
    Uniform(f64),
    /// One-sided queueing delay: `base + Exp(mean)` (seconds), the shape of Wi-Fi and busy
    /// links (mostly fast, a long tail).
    Exponential(f64),
}

/// How a path loses packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Nothing lost.
    None,
    /// Each packet lost independently with this probability.
    Bernoulli(f64),
    /// Two-state burst model: in the good state packets are lost with `loss_good`, in the bad
    /// state with `loss_bad`; the state flips with `p_good_bad` / `p_bad_good` per
    /// [`GE_STEP`] of time (a radio's interference lasts milliseconds, whatever the traffic:
    /// a sparse flow must not see one burst stretched over seconds).
    GilbertElliott {
        /// Good → bad transition probability per packet.
        p_good_bad: f64,
        /// Bad → good transition probability per packet.
        p_bad_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// Long-run loss rate.
    pub fn mean(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Bernoulli(p) => p,
            Loss::GilbertElliott { p_good_bad, p_bad_good, loss_good, loss_bad } => {
                let bad = p_good_bad / (p_good_bad + p_bad_good);
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// The time step of the Gilbert–Elliott chain, seconds (one 5 ms audio packet).
pub const GE_STEP: f64 = 0.005;

/// One direction of a path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Base one-way delay, seconds.
    pub base: f64,
    /// Delay variation.
    pub jitter: Jitter,
    /// Loss process.
    pub loss: Loss,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back by an extra `reorder_delay` (overtaken by later ones).
    pub reorder: f64,
    /// Extra delay of reordered packets, seconds.
    pub reorder_delay: f64,
}

impl LinkModel {
    /// A perfect path with a fixed delay.
    pub fn fixed(base: f64) -> Self {
        LinkModel {
            base,
            jitter: Jitter::None,
            loss: Loss::None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: 0.0,
        }
    }
}

/// A path's running state.
#[derive(Clone, Debug)]
pub struct Link {
    /// The model.
    pub model: LinkModel,
    rng: Rng,
    bad: bool,
    last: f64,
    /// Packets offered.
    pub offered: u64,
    /// Packets dropped.
    pub dropped: u64,
}

impl Link {
    /// A path with its own random stream.
    pub fn new(model: LinkModel, rng: Rng) -> Self {
        Link { model, rng, bad: false, last: 0.0, offered: 0, dropped: 0 }
    }

    /// Fates of one packet sent at `now` (seconds): the delays (seconds) of each delivered copy
    /// (none if lost).
    pub fn transmit(&mut self, now: f64, out: &mut Vec<f64>) {
        out.clear();
        self.offered += 1;
        let lost = match self.model.loss {
            Loss::None => false,
            Loss::Bernoulli(p) => self.rng.chance(p),
            Loss::GilbertElliott { p_good_bad, p_bad_good, loss_good, loss_bad } => {
                // Advance the two-state chain by the elapsed steps (closed form).
                let steps = ((now - self.last) / GE_STEP).max(0.0);
                self.last = now;
                let bad_share = p_good_bad / (p_good_bad + p_bad_good);
                let memory = (1.0 - p_good_bad - p_bad_good).powf(steps);
                let p_bad = if self.bad {
                    bad_share + (1.0 - bad_share) * memory
                } else {
                    bad_share * (1.0 - memory)
                };
                self.bad = self.rng.chance(p_bad);
                self.rng.chance(if self.bad { loss_bad } else { loss_good })
            }
        };
        if lost {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.model.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut d = match self.model.jitter {
                Jitter::None => self.model.base,
                Jitter::Uniform(a) => (self.model.base + self.rng.range(-a, a)).max(0.0),
                Jitter::Exponential(mean) => self.model.base + self.rng.exponential(mean),
            };
            if self.rng.chance(self.model.reorder) {
                d += self.model.reorder_delay;
            }
            out.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gilbert_elliott_hits_its_mean_in_bursts() {
        let loss = Loss::GilbertElliott {
            p_good_bad: 0.0095,
            p_bad_good: 0.28,
            loss_good: 0.0,
            loss_bad: 0.9,
        };
        let mut link = Link::new(LinkModel { loss, ..LinkModel::fixed(0.001) }, Rng::new(3));
        let mut out = Vec::new();
        let mut lost = Vec::new();
        for i in 0..400_000 {
            link.transmit(i as f64 * GE_STEP, &mut out);
            lost.push(out.is_empty());
        }
        let rate = link.dropped as f64 / link.offered as f64;
        assert!((rate - loss.mean()).abs() < 0.003, "{rate} vs {}", loss.mean());
        // Bursty: a loss is far more likely right after a loss than on average.
        let after = lost.windows(2).filter(|w| w[0]).count() as f64;
        let both = lost.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        assert!(both / after > 10.0 * rate);
    }
}
