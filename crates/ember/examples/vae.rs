//! A variational autoencoder on MNIST: a line-by-line port of pytorch/examples' `vae/main.py`
//! (Kingma and Welling, Auto-Encoding Variational Bayes), on the bundled 5,000-image subset by
//! default. Writes `reconstruction_<epoch>.png` and `sample_<epoch>.png` to `--out`.
//!
//! ```sh
//! cargo run --release --example vae -- --epochs 10
//! ```

use clap::Parser;
use ember::data::{save_image, save_image_with, DataLoader, Dataset, GridOptions, LoaderOptions, Mnist, TensorDataset};
use ember::nn::layers::Linear;
use ember::prelude::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist-5k");

#[derive(Parser)]
#[command(about = "VAE MNIST Example")]
struct Args {
    /// input batch size for training
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// number of epochs to train
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// cpu, cuda or lazy
    #[arg(long, default_value = "cpu")]
    device: String,
    /// random seed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// how many batches to wait before logging training status
    #[arg(long, default_value_t = 10)]
    log_interval: usize,
    /// where the images go
    #[arg(long, default_value = "results")]
    out: String,
}

fn loader(args: &Args, train: bool) -> Result<DataLoader<TensorDataset>> {
    Ok(DataLoader::new(Mnist::load(DATA, train)?.dataset(0.0, 1.0)?, LoaderOptions::new(args.batch_size, train)))
}

#[derive(ember::nn::Module)]
struct Vae {
    fc1: Linear,
    fc21: Linear,
    fc22: Linear,
    fc3: Linear,
    fc4: Linear,
}

impl Vae {
    fn new() -> Result<Self> {
        Ok(Vae {
            fc1: Linear::new(784, 400)?,
            fc21: Linear::new(400, 20)?,
            fc22: Linear::new(400, 20)?,
            fc3: Linear::new(20, 400)?,
            fc4: Linear::new(400, 784)?,
        })
    }

    fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h1 = self.fc1.forward(x)?.relu()?;
        Ok((self.fc21.forward(&h1)?, self.fc22.forward(&h1)?))
    }

    fn reparameterize(&self, mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
        let std = (0.5 * logvar).exp()?;
        let eps = std.randn_like()?;
        Ok(mu + eps * std)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let h3 = self.fc3.forward(z)?.relu()?;
        self.fc4.forward(&h3)?.sigmoid()
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (mu, logvar) = self.encode(&x.view([-1, 784])?)?;
        let z = self.reparameterize(&mu, &logvar)?;
        Ok((self.decode(&z)?, mu, logvar))
    }
}

/// Reconstruction + KL divergence losses summed over all elements and batch.
fn loss_function(recon_x: &Tensor, x: &Tensor, mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let bce = F::binary_cross_entropy_with(recon_x, &x.view([-1, 784])?, None, Reduction::Sum)?;
    // Appendix B of the VAE paper: 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    let kld = -0.5 * (1.0 + logvar - mu.pow(2)? - logvar.exp()?).sum()?;
    Ok(bce + kld)
}

fn train(epoch: usize, model: &mut Vae, optimizer: &mut impl Optimizer, args: &Args) -> Result<()> {
    model.train();
    let (train_loader, device) = (loader(args, true)?, Device::parse(&args.device)?);
    let mut train_loss = 0.0;
    for (batch_idx, batch) in train_loader.iter(epoch as u64).enumerate() {
        let data = batch?[0].to(device)?;
        optimizer.zero_grad()?;
        let (recon_batch, mu, logvar) = model.forward(&data)?;
        let loss = loss_function(&recon_batch, &data, &mu, &logvar)?;
        loss.backward()?;
        train_loss += loss.item()?;
        optimizer.step()?;
        if batch_idx % args.log_interval == 0 {
            let (n, seen, all) = (data.size_of(0)?, batch_idx * data.size_of(0)?, train_loader.dataset().len());
            let pct = 100.0 * batch_idx as f64 / train_loader.len() as f64;
            println!("Train Epoch: {epoch} [{seen}/{all} ({pct:.0}%)]\tLoss: {:.6}", loss.item()? / n as f64);
        }
    }
    println!("====> Epoch: {epoch} Average loss: {:.4}", train_loss / train_loader.dataset().len() as f64);
    Ok(())
}

fn test(epoch: usize, model: &mut Vae, args: &Args) -> Result<f64> {
    model.eval();
    let (test_loader, device) = (loader(args, false)?, Device::parse(&args.device)?);
    let mut test_loss = 0.0;
    for (i, batch) in test_loader.iter(0).enumerate() {
        let data = batch?[0].to(device)?;
        let (recon_batch, mu, logvar) = model.forward(&data)?;
        test_loss += loss_function(&recon_batch, &data, &mu, &logvar)?.item()?;
        if i == 0 {
            let n = data.size_of(0)?.min(8);
            let comparison = Tensor::cat(&[data.i(&idx![..n])?, recon_batch.view([-1, 1, 28, 28])?.i(&idx![..n])?], 0)?;
            let path = format!("{}/reconstruction_{epoch}.png", args.out);
            save_image_with(&comparison, path, &GridOptions { nrow: n, ..Default::default() })?;
        }
    }
    test_loss /= test_loader.dataset().len() as f64;
    println!("====> Test set loss: {test_loss:.4}");
    Ok(test_loss)
}

/// Trains for `args.epochs`, testing and sampling after each.
fn run(args: &Args) -> Result<Vae> {
    manual_seed(args.seed);
    let mut model = Vae::new()?.to(Device::parse(&args.device)?)?;
    let mut optimizer = optim::Adam::adam(model.parameters(), optim::AdamOptions::adam(1e-3))?;
    for epoch in 1..=args.epochs {
        train(epoch, &mut model, &mut optimizer, args)?;
        no_grad(|| test(epoch, &mut model, args))?;
        let sample = no_grad(|| model.decode(&Tensor::randn([64, 20])?.to(Device::parse(&args.device)?)?))?;
        save_image(&sample.view([64, 1, 28, 28])?, format!("{}/sample_{epoch}.png", args.out))?;
    }
    Ok(model)
}

fn main() -> Result<()> {
    run(&Args::parse()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two epochs at batch 256: the test loss falls below half that of predicting 0.5 for every
    /// pixel (784·ln 2 ≈ 543), and the images are written.
    #[test]
    fn learns_and_writes_images_on_a_short_run() {
        let out = std::env::temp_dir().join(format!("ember-vae-{}", std::process::id()));
        let mut args = Args::parse_from(["vae", "--epochs", "2", "--batch-size", "256", "--log-interval", "1000"]);
        args.out = out.display().to_string();
        let mut model = run(&args).unwrap();
        let loss = no_grad(|| test(3, &mut model, &args)).unwrap();
        assert!(loss < 0.5 * 784.0 * 2f64.ln(), "test loss {loss}");
        for name in ["reconstruction_2.png", "sample_2.png"] {
            assert!(std::fs::metadata(out.join(name)).unwrap().len() > 100, "{name}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}
