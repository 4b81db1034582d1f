//! What queueing theory predicts for the `quality` scenario's waits.
//!
//! With Poisson arrivals, exponential handle times and `c` identical agents
//! who each take one contact at a time, a work-conserving router is an
//! M/M/c queue. Erlang C gives the chance that a contact waits at all, and
//! the wait of those who do is exponential with rate `cμ − λ`:
//!
//! ```text
//! P(W > t) = C(c, A) · e^{−(cμ − λ) t}      A = λ/μ (offered load, in agents)
//! E[W]     = C(c, A) / (cμ − λ)
//! ```
//!
//! With priority classes served in strict order (no pre-emption, FIFO
//! within a class) and the same handle time for all, class `k`'s mean wait
//! is Cobham's formula for M/M/c:
//!
//! ```text
//! W_k = C(c, A) / (cμ · (1 − σ_{k−1}) · (1 − σ_k))      σ_k = Σ_{i ≤ k} λ_i / (cμ)
//! ```
//!
//! Work conservation makes the classes' waits, weighted by their rates,
//! average to the single-class `E[W]`: a property test checks it. Pure
//! arithmetic; the scenario compares it with what the contacts measured.

/// An M/M/c queue: `servers` agents, Poisson arrivals at `arrival_per_s`,
/// exponential service with mean `service_s`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Mmc {
    pub servers: u32,
    pub arrival_per_s: f64,
    pub service_s: f64,
}

impl Mmc {
    /// The queue, if it is stable (fewer contacts per second than the agents
    /// can handle) and its numbers are finite and positive.
    pub fn new(servers: u32, arrival_per_s: f64, service_s: f64) -> Option<Mmc> {
        let q = Mmc {
            servers,
            arrival_per_s,
            service_s,
        };
        let valid = servers > 0
            && arrival_per_s.is_finite()
            && arrival_per_s > 0.0
            && service_s.is_finite()
            && service_s > 0.0
            && q.offered_load() < f64::from(servers);
        valid.then_some(q)
    }

    /// A = λ/μ: the agents kept busy on average.
    pub fn offered_load(&self) -> f64 {
        self.arrival_per_s * self.service_s
    }

    /// ρ = A/c.
    pub fn utilisation(&self) -> f64 {
        self.offered_load() / f64::from(self.servers)
    }

    /// cμ − λ: the rate at which a waiting contact's wait ends.
    fn drain_rate(&self) -> f64 {
        f64::from(self.servers) / self.service_s - self.arrival_per_s
    }

    /// Erlang C: the chance that a contact finds every agent busy.
    pub fn p_wait(&self) -> f64 {
        // Erlang B by its recurrence (stable for thousands of agents), then
        // C = c·B / (c − A·(1 − B)).
        let a = self.offered_load();
        let mut b = 1.0;
        for k in 1..=self.servers {
            b = a * b / (f64::from(k) + a * b);
        }
        let c = f64::from(self.servers);
        c * b / (c - a * (1.0 - b))
    }

    /// The mean wait, `E[W]`, seconds.
    pub fn mean_wait_s(&self) -> f64 {
        self.p_wait() / self.drain_rate()
    }

    /// P(W > t), t in seconds (t ≥ 0).
    pub fn p_wait_longer(&self, t: f64) -> f64 {
        self.p_wait() * (-self.drain_rate() * t.max(0.0)).exp()
    }

    /// The wait that a share `q` (0..1) of contacts do not exceed, seconds:
    /// zero when more than `q` of them are offered at once.
    pub fn wait_quantile_s(&self, q: f64) -> f64 {
        let tail = 1.0 - q;
        let c = self.p_wait();
        if tail >= c {
            return 0.0;
        }
        (c / tail).ln() / self.drain_rate()
    }

    /// Mean wait of each priority class, seconds, for classes in the order
    /// they are served, with the given shares of the arrivals (summing to
    /// 1): Cobham's formula (see the module's docs).
    pub fn class_mean_waits_s(&self, shares_in_priority_order: &[f64]) -> Vec<f64> {
        let total: f64 = shares_in_priority_order.iter().sum();
        let capacity = f64::from(self.servers) / self.service_s;
        let c = self.p_wait();
        let mut sigma_before = 0.0;
        shares_in_priority_order
            .iter()
            .map(|share| {
                let sigma = sigma_before + self.arrival_per_s * share / total / capacity;
                let w = c / (capacity * (1.0 - sigma_before) * (1.0 - sigma));
                sigma_before = sigma;
                w
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-12)
    }

    #[test]
    fn erlang_c_matches_values_worked_by_hand_and_in_the_tables() {
        // c = 1: M/M/1, C = ρ.
        let q = Mmc::new(1, 0.5, 1.0).expect("stable");
        assert!(close(q.p_wait(), 0.5, 1e-12));
        assert!(close(q.mean_wait_s(), 1.0, 1e-12), "ρ/(μ − λ) = 0.5/0.5");
        // c = 2, A = 1: C = (1/2 · 2) / (1 + 1 + 1) = 1/3.
        let q = Mmc::new(2, 1.0, 1.0).expect("stable");
        assert!(close(q.p_wait(), 1.0 / 3.0, 1e-12));
        // The call-centre textbook case: 10 agents, 8 erlangs: C ≈ 0.409.
        let q = Mmc::new(10, 8.0, 1.0).expect("stable");
        assert!(close(q.p_wait(), 0.4094, 1e-3), "{}", q.p_wait());
        // Thousands of agents do not overflow.
        let q = Mmc::new(5_000, 4_900.0, 1.0).expect("stable");
        assert!(q.p_wait().is_finite() && q.p_wait() > 0.0 && q.p_wait() < 1.0);
    }

    #[test]
    fn an_unstable_or_meaningless_queue_has_no_model() {
        assert_eq!(Mmc::new(10, 10.0, 1.0), None, "ρ = 1");
        assert_eq!(Mmc::new(10, 20.0, 1.0), None, "ρ > 1");
        assert_eq!(Mmc::new(0, 1.0, 1.0), None);
        assert_eq!(Mmc::new(10, 0.0, 1.0), None);
        assert_eq!(Mmc::new(10, 1.0, f64::NAN), None);
    }

    #[test]
    fn one_class_waits_what_erlang_c_says() {
        let q = Mmc::new(10, 8.0, 1.0).expect("stable");
        let w = q.class_mean_waits_s(&[1.0]);
        assert!(close(w[0], q.mean_wait_s(), 1e-12));
    }

    #[test]
    fn quantiles_invert_the_tail() {
        let q = Mmc::new(10, 8.0, 1.0).expect("stable");
        assert_eq!(q.wait_quantile_s(0.5), 0.0, "most are offered at once");
        for p in [0.7, 0.9, 0.99] {
            let t = q.wait_quantile_s(p);
            assert!(close(q.p_wait_longer(t), 1.0 - p, 1e-9));
        }
    }

    proptest! {
        #[test]
        fn priority_keeps_the_work_conserving_mean(
            servers in 1u32..200,
            utilisation in 0.05f64..0.97,
            service_s in 0.01f64..100.0,
            shares in prop::collection::vec(0.01f64..1.0, 1..5),
        ) {
            let arrival = utilisation * f64::from(servers) / service_s;
            let q = Mmc::new(servers, arrival, service_s).expect("stable");
            let total: f64 = shares.iter().sum();
            let waits = q.class_mean_waits_s(&shares);
            let weighted: f64 = waits.iter().zip(&shares).map(|(w, s)| w * s / total).sum();
            prop_assert!(close(weighted, q.mean_wait_s(), 1e-9), "{weighted} vs {}", q.mean_wait_s());
            // Higher priority never waits longer.
            prop_assert!(waits.windows(2).all(|w| w[0] <= w[1] * (1.0 + 1e-12)));
        }

        #[test]
        fn waiting_is_likelier_and_longer_as_the_load_grows(
            servers in 1u32..500,
            low in 0.05f64..0.9,
            step in 0.001f64..0.09,
        ) {
            let c = f64::from(servers);
            let a = Mmc::new(servers, low * c, 1.0).expect("stable");
            let b = Mmc::new(servers, (low + step) * c, 1.0).expect("stable");
            prop_assert!((0.0..=1.0).contains(&a.p_wait()));
            prop_assert!(a.p_wait() <= b.p_wait());
            prop_assert!(a.mean_wait_s() <= b.mean_wait_s());
            prop_assert!(a.p_wait_longer(0.1) <= a.p_wait());
        }
    }
}
