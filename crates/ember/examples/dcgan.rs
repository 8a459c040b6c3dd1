//! Deep convolutional GAN on MNIST: a line-by-line port of pytorch/examples' `dcgan/main.py`
//! (Radford et al.) with its `--dataset mnist` path, on the bundled 5,000-image subset by default
//! (images resized to `--image-size` as the original's `transforms.Resize`). Checkpoints are
//! safetensors (`netG_epoch_<n>.safetensors`); `--net-g`/`--net-d` continue from them.
//!
//! ```sh
//! cargo run --release --example dcgan -- --niter 5 --outf runs/dcgan
//! ```

use clap::Parser;
use ember::data::{save_image_with, DataLoader, GridOptions, LoaderOptions, Mnist};
use ember::nn::layers::{BCELoss, BatchNorm2d, Conv2d, ConvTranspose2d, LeakyReLU, ReLU, Sigmoid, Tanh};
use ember::prelude::*;

#[derive(Parser, Debug)]
struct Args {
    /// directory with MNIST's IDX files
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist-5k"))]
    dataroot: String,
    /// number of data loading workers
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// input batch size
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// the height / width of the input image to network
    #[arg(long, default_value_t = 64)]
    image_size: usize,
    /// size of the latent z vector
    #[arg(long, default_value_t = 100)]
    nz: usize,
    /// number of generator filters
    #[arg(long, default_value_t = 64)]
    ngf: usize,
    /// number of discriminator filters
    #[arg(long, default_value_t = 64)]
    ndf: usize,
    /// number of epochs to train for
    #[arg(long, default_value_t = 25)]
    niter: usize,
    /// learning rate
    #[arg(long, default_value_t = 0.0002)]
    lr: f64,
    /// beta1 for adam
    #[arg(long, default_value_t = 0.5)]
    beta1: f64,
    /// check a single training cycle works
    #[arg(long)]
    dry_run: bool,
    /// cpu, cuda or lazy
    #[arg(long, default_value = "cpu")]
    device: String,
    /// path to netG (to continue training)
    #[arg(long)]
    net_g: Option<String>,
    /// path to netD (to continue training)
    #[arg(long)]
    net_d: Option<String>,
    /// folder to output images and model checkpoints
    #[arg(long, default_value = ".")]
    outf: String,
    /// manual seed
    #[arg(long)]
    manual_seed: Option<u64>,
}

/// Custom weights initialization called on netG and netD.
fn weights_init(m: &mut Sequential) -> Result<()> {
    m.apply_to(|c: &mut Conv2d| init::normal_(&c.weight, 0.0, 0.02))?;
    m.apply_to(|c: &mut ConvTranspose2d| init::normal_(&c.weight, 0.0, 0.02))?;
    m.apply_to(|b: &mut BatchNorm2d| init::normal_(b.weight.as_ref().unwrap(), 1.0, 0.02))?;
    m.apply_to(|b: &mut BatchNorm2d| init::zeros_(b.bias.as_ref().unwrap()))
}

fn generator(nz: usize, ngf: usize, nc: usize) -> Result<Sequential> {
    Ok(Sequential::new()
        // input is Z, going into a convolution
        .layer(ConvTranspose2d::new(nz, ngf * 8, 4).bias(false)?)
        .layer(BatchNorm2d::new(ngf * 8)?)
        .layer(ReLU::default())
        // state size. (ngf*8) x 4 x 4
        .layer(ConvTranspose2d::new(ngf * 8, ngf * 4, 4).stride(2).padding(1).bias(false)?)
        .layer(BatchNorm2d::new(ngf * 4)?)
        .layer(ReLU::default())
        // state size. (ngf*4) x 8 x 8
        .layer(ConvTranspose2d::new(ngf * 4, ngf * 2, 4).stride(2).padding(1).bias(false)?)
        .layer(BatchNorm2d::new(ngf * 2)?)
        .layer(ReLU::default())
        // state size. (ngf*2) x 16 x 16
        .layer(ConvTranspose2d::new(ngf * 2, ngf, 4).stride(2).padding(1).bias(false)?)
        .layer(BatchNorm2d::new(ngf)?)
        .layer(ReLU::default())
        // state size. (ngf) x 32 x 32
        .layer(ConvTranspose2d::new(ngf, nc, 4).stride(2).padding(1).bias(false)?)
        .layer(Tanh::default()))
    // state size. (nc) x 64 x 64
}

fn discriminator(nc: usize, ndf: usize) -> Result<Sequential> {
    Ok(Sequential::new()
        // input is (nc) x 64 x 64
        .layer(Conv2d::new(nc, ndf, 4).stride(2).padding(1).bias(false)?)
        .layer(LeakyReLU::new(0.2))
        // state size. (ndf) x 32 x 32
        .layer(Conv2d::new(ndf, ndf * 2, 4).stride(2).padding(1).bias(false)?)
        .layer(BatchNorm2d::new(ndf * 2)?)
        .layer(LeakyReLU::new(0.2))
        // state size. (ndf*2) x 16 x 16
        .layer(Conv2d::new(ndf * 2, ndf * 4, 4).stride(2).padding(1).bias(false)?)
        .layer(BatchNorm2d::new(ndf * 4)?)
        .layer(LeakyReLU::new(0.2))
        // state size. (ndf*4) x 8 x 8
        .layer(Conv2d::new(ndf * 4, ndf * 8, 4).stride(2).padding(1).bias(false)?)
        .layer(BatchNorm2d::new(ndf * 8)?)
        .layer(LeakyReLU::new(0.2))
        // state size. (ndf*8) x 4 x 4
        .layer(Conv2d::new(ndf * 8, 1, 4).bias(false)?)
        .layer(Sigmoid::default()))
}

/// Trains and returns the per-iteration losses `(D, G)`.
fn run(opt: &Args) -> Result<Vec<(f64, f64)>> {
    println!("{opt:?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let seed = opt.manual_seed.unwrap_or_else(|| now.map_or(1, |d| u64::from(d.subsec_nanos()) % 10000 + 1));
    println!("Random Seed: {seed}");
    manual_seed(seed);
    let device = Device::parse(&opt.device)?;
    let options = LoaderOptions { num_workers: opt.workers, ..LoaderOptions::new(opt.batch_size, true) };
    let dataloader = DataLoader::new(Mnist::load(&opt.dataroot, true)?.dataset(0.5, 0.5)?, options);
    let (nz, ngf, ndf, nc) = (opt.nz, opt.ngf, opt.ndf, 1);

    let mut net_g = generator(nz, ngf, nc)?.to(device)?;
    weights_init(&mut net_g)?;
    if let Some(path) = &opt.net_g {
        ember::nn::load(&net_g, path, true)?;
    }
    let mut net_d = discriminator(nc, ndf)?.to(device)?;
    weights_init(&mut net_d)?;
    if let Some(path) = &opt.net_d {
        ember::nn::load(&net_d, path, true)?;
    }

    let criterion = BCELoss::new();
    let fixed_noise = Tensor::randn([opt.batch_size, nz, 1, 1])?.to(device)?;
    let (real_label, fake_label) = (1.0, 0.0);

    // setup optimizer
    let adam = optim::AdamOptions { betas: (opt.beta1, 0.999), ..optim::AdamOptions::adam(opt.lr) };
    let mut optimizer_d = optim::Adam::adam(net_d.parameters(), adam.clone())?;
    let mut optimizer_g = optim::Adam::adam(net_g.parameters(), adam)?;

    let niter = if opt.dry_run { 1 } else { opt.niter };
    let mut losses = vec![];
    for epoch in 0..niter {
        for (i, data) in dataloader.iter(epoch as u64).enumerate() {
            // (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            net_d.zero_grad();
            let size = [opt.image_size, opt.image_size];
            let real = data?[0].interpolate(Some(&size), None, ember::InterpMode::Linear, false)?.to(device)?;
            let batch_size = real.size_of(0)?;
            let label = Tensor::full([batch_size], real_label)?.to(device)?;

            let output = net_d.forward(&real)?.view([-1, 1])?.squeeze_dim(1)?;
            let err_d_real = criterion.forward(&output, &label)?;
            err_d_real.backward()?;
            let d_x = output.mean()?.item()?;

            // train with fake
            let noise = Tensor::randn([batch_size, nz, 1, 1])?.to(device)?;
            let fake = net_g.forward(&noise)?;
            label.fill_(fake_label)?;
            let output = net_d.forward(&fake.detach())?.view([-1, 1])?.squeeze_dim(1)?;
            let err_d_fake = criterion.forward(&output, &label)?;
            err_d_fake.backward()?;
            let d_g_z1 = output.mean()?.item()?;
            let err_d = &err_d_real + &err_d_fake;
            optimizer_d.step()?;

            // (2) Update G network: maximize log(D(G(z)))
            net_g.zero_grad();
            label.fill_(real_label)?; // fake labels are real for generator cost
            let output = net_d.forward(&fake)?.view([-1, 1])?.squeeze_dim(1)?;
            let err_g = criterion.forward(&output, &label)?;
            err_g.backward()?;
            let d_g_z2 = output.mean()?.item()?;
            optimizer_g.step()?;

            let (ed, eg) = (err_d.item()?, err_g.item()?);
            println!(
                "[{epoch}/{niter}][{i}/{}] Loss_D: {ed:.4} Loss_G: {eg:.4} D(x): {d_x:.4} D(G(z)): {d_g_z1:.4} / {d_g_z2:.4}",
                dataloader.len()
            );
            losses.push((ed, eg));
            if i % 100 == 0 {
                let normalized = GridOptions { normalize: true, ..Default::default() };
                save_image_with(&real, format!("{}/real_samples.png", opt.outf), &normalized)?;
                let fake = no_grad(|| net_g.forward(&fixed_noise))?;
                save_image_with(&fake, format!("{}/fake_samples_epoch_{epoch:03}.png", opt.outf), &normalized)?;
            }
            if opt.dry_run {
                break;
            }
        }
        // do checkpointing
        ember::nn::save(&net_g, format!("{}/netG_epoch_{epoch}.safetensors", opt.outf))?;
        ember::nn::save(&net_d, format!("{}/netD_epoch_{epoch}.safetensors", opt.outf))?;
    }
    Ok(losses)
}

fn main() -> Result<()> {
    run(&Args::parse()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full 64x64 architecture at 8 filters per layer on 8 steps of 32 images: every shape
    /// fits, the losses are finite, D's first loss is about 2·ln 2 (a random D), images and
    /// checkpoints are written, and a checkpoint loads back into a fresh generator.
    #[test]
    fn trains_writes_and_reloads_on_a_short_run() {
        let outf = std::env::temp_dir().join(format!("ember-dcgan-{}", std::process::id()));
        let mut opt =
            Args::parse_from(["dcgan", "--ngf", "8", "--ndf", "8", "--batch-size", "32", "--manual-seed", "3"]);
        opt.outf = outf.display().to_string();
        opt.dry_run = true;
        let losses = run(&opt).unwrap();
        assert_eq!(losses.len(), 1);
        assert!((losses[0].0 - 2.0 * 2f64.ln()).abs() < 0.5 && losses[0].1.is_finite(), "{losses:?}");
        assert!(std::fs::metadata(outf.join("fake_samples_epoch_000.png")).unwrap().len() > 100);
        let g = generator(100, 8, 1).unwrap();
        ember::nn::load(&g, outf.join("netG_epoch_0.safetensors"), true).unwrap();
        let img = no_grad(|| g.forward(&Tensor::randn([2, 100, 1, 1]).unwrap())).unwrap();
        assert_eq!(img.shape(), &[2, 1, 64, 64]);
        std::fs::remove_dir_all(&outf).unwrap();
    }
}
