//! A character-level LSTM language model trained on Ember's own Rust sources (as char-rnn once
//! learned from Linux's C), with truncated backpropagation through time, then sampling.
//!
//! ```sh
//! cargo run --release --example char_lstm                 # 400 steps, then 300 sampled characters
//! cargo run --release --example char_lstm -- --steps 2000 --hidden 256
//! ```

use clap::Parser;
use ember::nn::layers::{Embedding, Linear, Rnn, RnnOptions};
use ember::nn::{functional as F, Module, ModuleExt};
use ember::optim::{clip_grad_norm_, AdamOptions, Optimizer};
use ember::{manual_seed, no_grad, Device, Result, Tensor};
use std::time::Instant;

/// The training text: a few of Ember's own source files, embedded at compile time.
const CORPUS: &[&str] = &[
    include_str!("../../autograd/src/graph/engine.rs"),
    include_str!("../../autograd/src/graph/node.rs"),
    include_str!("../../autograd/src/shape_ops.rs"),
    include_str!("../../nn/src/layers/rnn.rs"),
    include_str!("../../optim/src/algorithms.rs"),
];

#[derive(Parser, Debug, Clone)]
#[command(about = "Character-level LSTM on Ember's own sources, with truncated BPTT")]
struct Args {
    /// Optimisation steps (each a batch of sequences of `--bptt` characters).
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Characters per truncated-BPTT segment.
    #[arg(long, default_value_t = 64)]
    bptt: usize,
    /// Parallel streams through the text.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// LSTM width.
    #[arg(long, default_value_t = 192)]
    hidden: usize,
    /// Characters to sample at the end.
    #[arg(long, default_value_t = 300)]
    sample: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda:N (`--features cuda`), or `lazy` / `lazy-cuda:N` (lazy evaluation and fusion: the
    /// same losses and sample, to the bit).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(ember::nn::Module)]
struct CharModel {
    embed: Embedding,
    lstm: Rnn,
    head: Linear,
}

impl CharModel {
    /// Logits `[batch, seq, vocab]` and the final state, from `state` (zeros when `None`).
    fn run(&self, ids: &Tensor, state: Option<(Tensor, Tensor)>) -> Result<(Tensor, (Tensor, Tensor))> {
        let x = self.embed.forward(ids)?;
        let (h0, c0) = match &state {
            Some((h, c)) => (Some(h), Some(c)),
            None => (None, None),
        };
        let (out, h, c) = self.lstm.forward_with_state(&x, h0, c0)?;
        Ok((self.head.forward(&out)?, (h, c.expect("LSTM returns a cell state"))))
    }
}

struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    fn new(text: &str) -> Vocab {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocab { chars }
    }
    fn id(&self, c: char) -> i64 {
        self.chars.binary_search(&c).map(|i| i as i64).unwrap_or(0)
    }
}

/// Trains and returns (first loss, last loss, sampled text).
fn train(args: &Args) -> Result<(f64, f64, String)> {
    let device = Device::parse(&args.device)?;
    manual_seed(args.seed);
    let text: String = CORPUS.concat();
    let vocab = Vocab::new(&text);
    let ids: Vec<i64> = text.chars().map(|c| vocab.id(c)).collect();
    let v = vocab.chars.len();
    let mut model = CharModel {
        embed: Embedding::new(v, 48)?,
        lstm: Rnn::lstm(48, args.hidden, RnnOptions { batch_first: true, ..Default::default() })?,
        head: Linear::new(args.hidden, v)?,
    };
    model.to_device(device)?; // initialised on the CPU: every device starts from the same weights
    let mut opt = ember::optim::Adam::adam(model.parameters(), AdamOptions::adam(3e-3))?;
    // `batch` streams, each reading its own contiguous stretch of the text
    let stream_len = ids.len() / args.batch;
    let mut pos = 0usize;
    let mut state: Option<(Tensor, Tensor)> = None;
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    let t0 = Instant::now();
    println!("{} characters, vocabulary {v}, {} parameters", ids.len(), model.num_parameters());
    for step in 0..args.steps {
        if pos + args.bptt + 1 > stream_len {
            pos = 0;
            state = None;
        }
        let mut x = Vec::with_capacity(args.batch * args.bptt);
        let mut y = Vec::with_capacity(args.batch * args.bptt);
        for b in 0..args.batch {
            let start = b * stream_len + pos;
            x.extend_from_slice(&ids[start..start + args.bptt]);
            y.extend_from_slice(&ids[start + 1..start + args.bptt + 1]);
        }
        pos += args.bptt;
        let x = Tensor::from_vec(x, [args.batch, args.bptt])?.to(device)?;
        let y = Tensor::from_vec(y, [args.batch * args.bptt])?.to(device)?;
        opt.zero_grad()?;
        let (logits, (h, c)) = model.run(&x, state.take())?;
        let loss = F::cross_entropy_with(&logits.reshape([-1, v as isize])?, &y, &Default::default())?;
        loss.backward()?;
        clip_grad_norm_(&model.parameters(), 1.0, 2.0, false)?;
        opt.step()?;
        // truncated BPTT: keep the state's values, cut its history
        state = Some((h.detach(), c.detach()));
        let l = loss.item()?;
        if step == 0 {
            first = l;
        }
        last = l;
        if step % 50 == 0 || step + 1 == args.steps {
            println!("step {step:>5}  loss {l:.3}  ({:.1}s)", t0.elapsed().as_secs_f64());
        }
    }
    let sample = no_grad(|| sample(&model, &vocab, args, device))?;
    Ok((first, last, sample))
}

fn sample(model: &CharModel, vocab: &Vocab, args: &Args, device: Device) -> Result<String> {
    let mut out = String::from("fn ");
    let prime: Vec<i64> = out.chars().map(|c| vocab.id(c)).collect();
    let n = prime.len();
    let (mut logits, mut state) = model.run(&Tensor::from_vec(prime, [1, n])?.to(device)?, None)?;
    for _ in 0..args.sample {
        let last = logits.select(1, -1)?.div(args.temperature.max(1e-3))?.softmax(-1)?;
        let next = last.multinomial(1, true)?.reshape([1, 1])?;
        let id = next.item()? as usize;
        out.push(vocab.chars[id]);
        let (l, s) = model.run(&next, Some(state))?;
        logits = l;
        state = s;
    }
    Ok(out)
}

fn main() {
    let args = Args::parse();
    match train(&args) {
        Ok((first, last, text)) => {
            println!("\nloss {first:.3} -> {last:.3}\n--- sample (temperature {}) ---\n{text}", args.temperature);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `manual_seed` is process-wide: the tests that seed it run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn args(device: &str) -> Args {
        Args { steps: 40, bptt: 16, batch: 8, hidden: 32, sample: 20, temperature: 1.0, seed: 1, device: device.into() }
    }

    #[test]
    fn learns_and_samples_on_a_small_setting() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (first, last, text) = train(&args("cpu")).unwrap();
        assert!(last < first, "loss should fall: {first} -> {last}");
        assert_eq!(text.chars().count(), 23);
    }

    /// Lazy evaluation: the same losses and the same sampled text, to the bit.
    #[test]
    fn lazy_mode_gives_the_same_training_and_sample() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (eager, lazy) = (train(&args("cpu")).unwrap(), train(&args("lazy")).unwrap());
        assert_eq!(eager.0.to_bits(), lazy.0.to_bits());
        assert_eq!(eager.1.to_bits(), lazy.1.to_bits());
        assert_eq!(eager.2, lazy.2);
        assert!(train(&args("tpu")).is_err());
    }
}
