//! torchvision's `utils.make_grid` and `utils.save_image`: a batch of images `[B, C, H, W]` laid
//! out in a grid and written as an 8-bit PNG (grey for one channel, RGB for three).
//!
//! Values are clamped to `[0, 1]` and scaled to bytes as torchvision does (`x · 255 + 0.5`,
//! truncated); `normalize` first maps the batch's min..max onto `[0, 1]`. The PNG is written to a
//! temporary file beside the target and renamed over it, so a reader never sees half an image;
//! a missing parent directory is created (unlike torchvision, which fails).

use ember_autograd::{DType, Error, Result, Tensor};
use std::path::Path;

/// Layout and scaling of [`make_grid`] / [`save_image_with`], with torchvision's defaults.
#[derive(Clone, Copy, Debug)]
pub struct GridOptions {
    /// Images per row (default 8).
    pub nrow: usize,
    /// Pixels between images and around the grid (default 2).
    pub padding: usize,
    /// Map the batch's min..max onto `[0, 1]` first (default false).
    pub normalize: bool,
    /// Value of the padding pixels (default 0).
    pub pad_value: f32,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions { nrow: 8, padding: 2, normalize: false, pad_value: 0.0 }
    }
}

/// The images of `images` (`[B, C, H, W]`, `[C, H, W]` or `[H, W]`; C is 1 or 3) in one
/// `[C, rows·(H+p)+p, cols·(W+p)+p]` f32 CPU tensor.
pub fn make_grid(images: &Tensor, o: &GridOptions) -> Result<Tensor> {
    let x = match images.ndim() {
        2 => images.unsqueeze(0)?.unsqueeze(0)?,
        3 => images.unsqueeze(0)?,
        4 => images.clone(),
        _ => return Err(Error::shape("make_grid", format!("expects [B, C, H, W], got {:?}", images.shape()))),
    };
    let [b, c, h, w] = x.dims4()?;
    if b == 0 || o.nrow == 0 || !(c == 1 || c == 3) {
        return Err(Error::shape(
            "make_grid",
            format!("needs at least one image with 1 or 3 channels and nrow > 0, got {:?}, nrow {}", x.shape(), o.nrow),
        ));
    }
    let mut data = x.detach().to(ember_autograd::Device::Cpu)?.to_dtype(DType::F32)?.to_vec::<f32>()?;
    if o.normalize {
        let (lo, hi) = data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, z), &v| (a.min(v), z.max(v)));
        let scale = 1.0 / (hi - lo).max(1e-5);
        data.iter_mut().for_each(|v| *v = (*v - lo) * scale);
    }
    let (cols, p) = (o.nrow.min(b), o.padding);
    let rows = b.div_ceil(cols);
    let (gh, gw) = (rows * (h + p) + p, cols * (w + p) + p);
    let mut grid = vec![o.pad_value; c * gh * gw];
    for (k, img) in data.chunks(c * h * w).enumerate() {
        let (y0, x0) = ((k / cols) * (h + p) + p, (k % cols) * (w + p) + p);
        for ch in 0..c {
            for i in 0..h {
                let src = &img[(ch * h + i) * w..][..w];
                grid[(ch * gh + y0 + i) * gw + x0..][..w].copy_from_slice(src);
            }
        }
    }
    Tensor::from_vec(grid, [c, gh, gw])
}

/// [`save_image_with`] with torchvision's defaults (8 per row, padding 2, no normalisation).
pub fn save_image(images: &Tensor, path: impl AsRef<Path>) -> Result<()> {
    save_image_with(images, path, &GridOptions::default())
}

/// Writes `images` as one PNG grid (see the module docs for the scaling).
pub fn save_image_with(images: &Tensor, path: impl AsRef<Path>, o: &GridOptions) -> Result<()> {
    let path = path.as_ref();
    let grid = make_grid(images, o)?;
    let [c, h, w] = grid.dims3()?;
    let vals = grid.to_vec::<f32>()?;
    // channel-major to interleaved bytes
    let mut bytes = vec![0u8; c * h * w];
    for ch in 0..c {
        for (i, v) in vals[ch * h * w..][..h * w].iter().enumerate() {
            bytes[i * c + ch] = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
    }
    let tmp = path.with_extension("png.tmp");
    let io = |e: std::io::Error| Error::io(path, e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let enc = |e: png::EncodingError| Error::io(path, std::io::Error::other(e));
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut encoder = png::Encoder::new(file, w as u32, h as u32);
        encoder.set_color(if c == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().map_err(enc)?.write_image_data(&bytes).map_err(enc)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_with_padding() {
        let x = Tensor::arange(8).unwrap().to_dtype(DType::F32).unwrap().reshape([2, 1, 2, 2]).unwrap();
        let g = make_grid(&x, &GridOptions { nrow: 2, padding: 1, ..Default::default() }).unwrap();
        assert_eq!(g.shape(), &[1, 4, 7]);
        let rows = g.squeeze_dim(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(rows[0], vec![0.0; 7]);
        assert_eq!(rows[1], vec![0.0, 0.0, 1.0, 0.0, 4.0, 5.0, 0.0]);
        assert_eq!(rows[2], vec![0.0, 2.0, 3.0, 0.0, 6.0, 7.0, 0.0]);
    }

    #[test]
    fn save_image_writes_a_png_that_decodes_to_the_grid() {
        let dir = std::env::temp_dir().join(format!("ember-image-{}", std::process::id()));
        let path = dir.join("new-dir").join("grid.png"); // the directory is created
        let x = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 2.0], [1, 1, 2, 2]).unwrap();
        save_image_with(&x, &path, &GridOptions { padding: 0, ..Default::default() }).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 2));
        assert_eq!(&buf[..4], &[0, 128, 255, 255]); // 0.5·255+0.5 = 128; 2.0 clamps to 1
        assert!(make_grid(&Tensor::zeros([2, 2, 3, 3]).unwrap(), &GridOptions::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
