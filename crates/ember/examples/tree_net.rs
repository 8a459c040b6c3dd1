//! A network whose structure follows its input: a recursive network over randomly shaped
//! expression trees (`(3 + (4 * 2))`), evaluated bottom-up with one layer application per node,
//! so every sample builds a different graph. It learns the value of the expression modulo 10.
//!
//! ```sh
//! cargo run --release --example tree_net
//! ```

use clap::Parser;
use ember::nn::layers::{Embedding, Linear};
use ember::nn::{functional as F, Module, ModuleExt};
use ember::optim::{AdamOptions, Optimizer};
use ember::{manual_seed, no_grad, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Parser, Debug, Clone)]
#[command(about = "Recursive network over random expression trees (define-by-run)")]
struct Args {
    /// Training steps (each a batch of trees).
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Trees per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Deepest tree.
    #[arg(long, default_value_t = 3)]
    max_depth: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, or `lazy` (the same training with lazy evaluation and fusion: the graph is recorded
    /// per tree and evaluated where a value is read).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// An arithmetic expression over digits.
enum Expr {
    Digit(i64),
    Add(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
}

impl Expr {
    fn random(rng: &mut ChaCha8Rng, depth: usize) -> Expr {
        if depth == 0 || rng.random_bool(0.3) {
            return Expr::Digit(rng.random_range(0..10));
        }
        let (l, r) = (Box::new(Expr::random(rng, depth - 1)), Box::new(Expr::random(rng, depth - 1)));
        if rng.random_bool(0.5) {
            Expr::Add(l, r)
        } else {
            Expr::Mul(l, r)
        }
    }
    fn value(&self) -> i64 {
        match self {
            Expr::Digit(d) => *d,
            Expr::Add(l, r) => (l.value() + r.value()) % 10,
            Expr::Mul(l, r) => (l.value() * r.value()) % 10,
        }
    }
    fn show(&self) -> String {
        match self {
            Expr::Digit(d) => d.to_string(),
            Expr::Add(l, r) => format!("({} + {})", l.show(), r.show()),
            Expr::Mul(l, r) => format!("({} * {})", l.show(), r.show()),
        }
    }
}

#[derive(ember::nn::Module)]
struct TreeNet {
    leaf: Embedding,
    add: Linear,
    mul: Linear,
    out: Linear,
}

impl TreeNet {
    /// The tree's vector `[1, D]`: the graph mirrors the tree (recursion in plain Rust).
    fn encode(&self, e: &Expr) -> Result<Tensor> {
        match e {
            Expr::Digit(d) => self.leaf.forward(&Tensor::from_vec(vec![*d], [1])?.to(self.leaf.weight.device())?),
            Expr::Add(l, r) => self.combine(&self.add, l, r),
            Expr::Mul(l, r) => self.combine(&self.mul, l, r),
        }
    }
    fn combine(&self, layer: &Linear, l: &Expr, r: &Expr) -> Result<Tensor> {
        let both = Tensor::cat(&[self.encode(l)?, self.encode(r)?], 1)?;
        layer.forward(&both)?.tanh()
    }
}

/// Trains; returns (accuracy on fresh trees before, after).
fn train(args: &Args) -> Result<(f64, f64)> {
    manual_seed(args.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let d = 64;
    let mut net = TreeNet {
        leaf: Embedding::new(10, d)?,
        add: Linear::new(2 * d, d)?,
        mul: Linear::new(2 * d, d)?,
        out: Linear::new(d, 10)?,
    };
    let device = Device::parse(&args.device)?;
    net.to_device(device)?;
    let mut opt = ember::optim::Adam::adam(net.parameters(), AdamOptions::adam(3e-3))?;
    let test: Vec<Expr> = (0..300).map(|_| Expr::random(&mut rng, args.max_depth)).collect();
    let accuracy = |net: &TreeNet| -> Result<f64> {
        no_grad(|| {
            let mut ok = 0;
            for e in &test {
                let pred = net.out.forward(&net.encode(e)?)?.argmax(Some(1), false)?.item()? as i64;
                ok += (pred == e.value()) as usize;
            }
            Ok(ok as f64 / test.len() as f64)
        })
    };
    let before = accuracy(&net)?;
    for step in 0..args.steps {
        let trees: Vec<Expr> = (0..args.batch).map(|_| Expr::random(&mut rng, args.max_depth)).collect();
        let codes = trees.iter().map(|t| net.encode(t)).collect::<Result<Vec<_>>>()?;
        let logits = net.out.forward(&Tensor::cat(&codes, 0)?)?;
        let y = Tensor::from_vec(trees.iter().map(|t| t.value()).collect::<Vec<_>>(), [trees.len()])?.to(device)?;
        let loss = F::cross_entropy_with(&logits, &y, &Default::default())?;
        opt.zero_grad()?;
        loss.backward()?;
        opt.step()?;
        if step % 250 == 0 {
            println!("step {step:>5}  loss {:.3}  e.g. {} = {}", loss.item()?, trees[0].show(), trees[0].value());
        }
    }
    Ok((before, accuracy(&net)?))
}

fn main() {
    let args = Args::parse();
    match train(&args) {
        Ok((before, after)) => println!(
            "\naccuracy of (value mod 10) on 300 unseen trees: {:.1}% before training, {:.1}% after",
            100.0 * before,
            100.0 * after
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

    /// `train` seeds the process-wide random stream: one test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn every_tree_builds_its_own_graph_and_learning_helps() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (before, after) =
            train(&Args { steps: 150, batch: 16, max_depth: 2, seed: 3, device: "cpu".into() }).unwrap();
        assert!(after > before + 0.1, "accuracy {before} -> {after}");
    }

    /// The dynamic network in lazy mode: a graph per tree, recorded and fused, gives eager's
    /// accuracies exactly (its arithmetic is eager's to the bit).
    #[test]
    fn lazy_mode_gives_the_same_training() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let args = |device: &str| Args { steps: 40, batch: 8, max_depth: 2, seed: 5, device: device.into() };
        assert_eq!(train(&args("cpu")).unwrap(), train(&args("lazy")).unwrap());
    }
}
