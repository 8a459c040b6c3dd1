//! MNIST's IDX format (raw or gzip-compressed): `u8` images and labels, validated.

use ember_autograd::{DType, Error, Result, Tensor};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads an IDX file, gunzipping it when it starts with the gzip magic bytes. Only as many bytes
/// as the header declares (plus one, to detect trailing data) are ever inflated, so a small
/// compressed file that expands to gigabytes is rejected without allocating them.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let what = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let got = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    if magic[..got] == [0x1f, 0x8b] {
        read_idx_bounded(&mut flate2::read::GzDecoder::new(head.chain(file)), &what, "corrupt gzip stream")
    } else {
        read_idx_bounded(&mut head.chain(file), &what, "read error")
    }
}

/// Reads the IDX header from `r`, then at most the payload it declares plus one byte.
fn read_idx_bounded(r: &mut impl Read, what: &str, failure: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut read_upto = |bytes: &mut Vec<u8>, total: usize| -> Result<()> {
        let want = total.saturating_sub(bytes.len()) as u64;
        r.take(want).read_to_end(bytes).map(|_| ()).map_err(|e| Error::format(what, format!("{failure}: {e}")))
    };
    read_upto(&mut bytes, 4)?;
    if bytes.len() < 4 {
        return Ok(bytes); // parse_idx_u8 reports the short file
    }
    let header = 4 + 4 * bytes[3] as usize;
    read_upto(&mut bytes, header)?;
    if bytes.len() < header {
        return Ok(bytes);
    }
    let payload = bytes[4..header]
        .chunks(4)
        .try_fold(1usize, |a, d| a.checked_mul(u32::from_be_bytes(d.try_into().expect("4 bytes")) as usize))
        .and_then(|n| n.checked_add(header + 1))
        .ok_or_else(|| Error::format(what, "sizes overflow"))?;
    bytes.try_reserve_exact(payload - bytes.len()).map_err(|_| Error::out_of_memory("mnist", payload))?;
    read_upto(&mut bytes, payload)?;
    Ok(bytes)
}

/// Parses an IDX file of unsigned bytes: returns its dims and data. Checks the magic number
/// (`0x0000_08_<ndim>`), that sizes match the payload, and `expect_ndim`.
pub fn parse_idx_u8(bytes: &[u8], what: &str, expect_ndim: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 {
        return Err(Error::format(what, format!("file of {} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(Error::format(
            what,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file of unsigned bytes",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let nd = bytes[3] as usize;
    if nd != expect_ndim {
        return Err(Error::format(what, format!("expected {expect_ndim} dims, the header says {nd}")));
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err(Error::format(what, "truncated header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let n =
        dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| Error::format(what, "sizes overflow"))?;
    let payload = &bytes[header..];
    if payload.len() != n {
        return Err(Error::format(
            what,
            format!("header promises {dims:?} = {n} bytes, the file holds {} (truncated or padded)", payload.len()),
        ));
    }
    Ok((dims, payload.to_vec()))
}

/// An MNIST-format split: images `[N, H, W]` u8 and labels `[N]` i64.
#[derive(Clone)]
pub struct Mnist {
    /// `[N, 28, 28]`, dtype u8.
    pub images: Tensor,
    /// `[N]`, dtype i64.
    pub labels: Tensor,
}

impl Mnist {
    /// Loads `train-*` (train) or `t10k-*` (test) from `dir`, each `.gz` or raw.
    pub fn load(dir: impl AsRef<Path>, train: bool) -> Result<Mnist> {
        let dir = dir.as_ref();
        let prefix = if train { "train" } else { "t10k" };
        let find = |stem: &str| -> Result<PathBuf> {
            for name in [format!("{prefix}-{stem}.gz"), format!("{prefix}-{stem}")] {
                let p = dir.join(&name);
                if p.exists() {
                    return Ok(p);
                }
            }
            Err(Error::io(dir.join(format!("{prefix}-{stem}[.gz]")), std::io::ErrorKind::NotFound.into()))
        };
        let ip = find("images-idx3-ubyte")?;
        let lp = find("labels-idx1-ubyte")?;
        let (idims, ibytes) = parse_idx_u8(&read_maybe_gzip(&ip)?, &ip.display().to_string(), 3)?;
        let (ldims, lbytes) = parse_idx_u8(&read_maybe_gzip(&lp)?, &lp.display().to_string(), 1)?;
        if idims[0] != ldims[0] {
            return Err(Error::format(
                &dir.display().to_string(),
                format!("{} images but {} labels", idims[0], ldims[0]),
            ));
        }
        if let Some(bad) = lbytes.iter().find(|&&l| l > 9) {
            return Err(Error::format(&lp.display().to_string(), format!("label {bad} is not a digit")));
        }
        let images = Tensor::from_vec(ibytes, &idims)?;
        let labels = Tensor::from_vec(lbytes, &ldims)?.to_dtype(DType::I64)?;
        Ok(Mnist { images, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.shape()[0]
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A dataset of `[normalized image [1, H, W] f32, label i64]` pairs (torchvision's MNIST with
    /// `ToTensor()` and `Normalize(mean, std)`; `(0.0, 1.0)` keeps ToTensor's [0, 1]).
    pub fn dataset(&self, mean: f64, std: f64) -> Result<crate::TensorDataset> {
        crate::TensorDataset::new(vec![self.normalized_images(mean, std)?, self.labels.clone()])
    }

    /// Images as f32 `[N, 1, H, W]` scaled to [0, 1] (ToTensor), then normalised with `mean`/`std`.
    pub fn normalized_images(&self, mean: f64, std: f64) -> Result<Tensor> {
        self.images.to_dtype(DType::F32)?.div(255.0)?.sub(mean)?.div(std)?.unsqueeze(1)
    }
}

impl crate::Dataset for Mnist {
    fn len(&self) -> usize {
        self.images.shape()[0]
    }
    /// `[image u8 [H, W], label i64 []]`.
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        if index >= self.len() {
            return Err(Error::invalid("Mnist", format!("index {index} out of range for {} images", self.len())));
        }
        Ok(vec![self.images.select(0, index as isize)?, self.labels.select(0, index as isize)?])
    }
}
