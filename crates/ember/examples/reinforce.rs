//! Policy gradients (REINFORCE) on a CartPole written in Rust. Environments plug in through the
//! `Environment` trait, so a simulator or a sensor feed can replace CartPole unchanged.
//!
//! ```sh
//! cargo run --release --example reinforce
//! ```

use clap::Parser;
use ember::nn::layers::{Linear, Tanh};
use ember::nn::{Module, ModuleExt, Sequential};
use ember::optim::{AdamOptions, Optimizer};
use ember::{manual_seed, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Something an agent acts in: observations are `f32` vectors, actions are indices.
pub trait Environment {
    /// Length of an observation.
    fn observation_size(&self) -> usize;
    /// Number of discrete actions.
    fn num_actions(&self) -> usize;
    /// Starts an episode and returns the first observation.
    fn reset(&mut self, rng: &mut ChaCha8Rng) -> Vec<f32>;
    /// Applies `action`; returns (observation, reward, episode over).
    fn step(&mut self, action: usize) -> (Vec<f32>, f32, bool);
}

/// The classic cart-pole balancing task (Barto, Sutton and Anderson, 1983), with the usual
/// constants: push left or right; +1 per step until the pole tilts past 12° or the cart leaves
/// ±2.4, or 500 steps pass.
pub struct CartPole {
    state: [f64; 4],
    steps: usize,
}

impl CartPole {
    /// A new environment (call `reset` first).
    pub fn new() -> Self {
        CartPole { state: [0.0; 4], steps: 0 }
    }
}

impl Default for CartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl Environment for CartPole {
    fn observation_size(&self) -> usize {
        4
    }
    fn num_actions(&self) -> usize {
        2
    }
    fn reset(&mut self, rng: &mut ChaCha8Rng) -> Vec<f32> {
        self.state = std::array::from_fn(|_| rng.random_range(-0.05..0.05));
        self.steps = 0;
        self.state.iter().map(|&v| v as f32).collect()
    }
    fn step(&mut self, action: usize) -> (Vec<f32>, f32, bool) {
        const G: f64 = 9.8;
        const M_CART: f64 = 1.0;
        const M_POLE: f64 = 0.1;
        const HALF_LEN: f64 = 0.5;
        const FORCE: f64 = 10.0;
        const TAU: f64 = 0.02;
        let total = M_CART + M_POLE;
        let pml = M_POLE * HALF_LEN;
        let [x, x_dot, th, th_dot] = self.state;
        let f = if action == 1 { FORCE } else { -FORCE };
        let (s, c) = th.sin_cos();
        let temp = (f + pml * th_dot * th_dot * s) / total;
        let th_acc = (G * s - c * temp) / (HALF_LEN * (4.0 / 3.0 - M_POLE * c * c / total));
        let x_acc = temp - pml * th_acc * c / total;
        self.state = [x + TAU * x_dot, x_dot + TAU * x_acc, th + TAU * th_dot, th_dot + TAU * th_acc];
        self.steps += 1;
        let fallen = self.state[0].abs() > 2.4 || self.state[2].abs() > 12f64.to_radians();
        let obs = self.state.iter().map(|&v| v as f32).collect();
        (obs, 1.0, fallen || self.steps >= 500)
    }
}

#[derive(Parser, Debug, Clone)]
#[command(about = "REINFORCE on CartPole")]
struct Args {
    /// Policy updates.
    #[arg(long, default_value_t = 150)]
    updates: usize,
    /// Episodes per update.
    #[arg(long, default_value_t = 4)]
    episodes: usize,
    /// Discount.
    #[arg(long, default_value_t = 0.99)]
    gamma: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs one episode with the policy; returns the log-probabilities of the actions taken and the
/// rewards.
fn episode(env: &mut dyn Environment, policy: &Sequential, rng: &mut ChaCha8Rng) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let mut obs = env.reset(rng);
    let (mut logps, mut rewards) = (vec![], vec![]);
    loop {
        let n = obs.len();
        let logp = policy.forward(&Tensor::from_vec(obs, [1, n])?)?.log_softmax(-1)?.squeeze_dim(0)?;
        let probs = logp.detach().exp()?.to_vec_f64()?;
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let action = probs.iter().position(|p| {
            acc += p;
            u < acc
        });
        let action = action.unwrap_or(probs.len() - 1);
        logps.push(logp.select(0, action as isize)?);
        let (next, r, done) = env.step(action);
        rewards.push(r);
        obs = next;
        if done {
            return Ok((logps, rewards));
        }
    }
}

/// Trains; returns the mean episode length of the first and the last update.
fn train(args: &Args, env: &mut dyn Environment) -> Result<(f64, f64)> {
    manual_seed(args.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let policy = Sequential::new()
        .layer(Linear::new(env.observation_size(), 64)?)
        .layer(Tanh::default())
        .layer(Linear::new(64, env.num_actions())?);
    let mut opt = ember::optim::Adam::adam(policy.parameters(), AdamOptions::adam(1e-2))?;
    let (mut first, mut last) = (0.0, 0.0);
    for update in 0..args.updates {
        let mut terms = vec![];
        let mut total_len = 0usize;
        for _ in 0..args.episodes {
            let (logps, rewards) = episode(env, &policy, &mut rng)?;
            total_len += rewards.len();
            // discounted returns, normalised within the episode
            let mut g = 0.0;
            let mut returns: Vec<f64> = rewards
                .iter()
                .rev()
                .map(|&r| {
                    g = r as f64 + args.gamma * g;
                    g
                })
                .collect();
            returns.reverse();
            let mean = returns.iter().sum::<f64>() / returns.len() as f64;
            let std = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / returns.len() as f64).sqrt() + 1e-8;
            let n = returns.len();
            let adv = Tensor::from_vec(returns.iter().map(|r| ((r - mean) / std) as f32).collect::<Vec<_>>(), [n])?;
            terms.push(Tensor::stack(&logps, 0)?.mul(&adv)?.sum()?.neg()?);
        }
        let loss = Tensor::stack(&terms, 0)?.mean()?;
        opt.zero_grad()?;
        loss.backward()?;
        opt.step()?;
        let mean_len = total_len as f64 / args.episodes as f64;
        if update == 0 {
            first = mean_len;
        }
        last = mean_len;
        if update % 10 == 0 || update + 1 == args.updates {
            println!("update {update:>4}  mean episode length {mean_len:6.1}");
        }
    }
    Ok((first, last))
}

fn main() {
    let args = Args::parse();
    match train(&args, &mut CartPole::new()) {
        Ok((first, last)) => println!(
            "\nmean episode length: {first:.1} at the start, {last:.1} at the end (500 = balanced to the limit)"
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cartpole_falls_without_control_and_training_runs() {
        let mut env = CartPole::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        env.reset(&mut rng);
        let mut steps = 0;
        while !env.step(1).2 {
            steps += 1;
        }
        assert!(steps < 100, "always pushing right must fail fast, took {steps}");
        let (first, last) =
            train(&Args { updates: 30, episodes: 4, gamma: 0.99, seed: 1 }, &mut CartPole::new()).unwrap();
        assert!(first > 0.0 && last > first, "episode length {first} -> {last}");
    }
}
