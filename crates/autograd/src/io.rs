//! Interop with files: safetensors (memory-mapped read, atomic write) and NumPy `.npy`/`.npz` (through
//! the `zip` crate), and reading PyTorch's `torch.save` files ([`load_torch`], weights only).
//! Corrupt or truncated files are rejected with the reason; writes go to a temporary file that is
//! renamed into place, so a crash never leaves a half-written file where the old one was.

pub use crate::torch_file::{load_torch, load_torch_bytes, load_torch_state_dict, TorchValue};
use crate::Tensor;
use ember_storage::{DType, Device, Error, HostData, Result};
use std::io::{Read, Write};
use std::path::Path;

fn st_dtype(d: safetensors::Dtype, what: &str) -> Result<DType> {
    use safetensors::Dtype as S;
    Ok(match d {
        S::BOOL => DType::Bool,
        S::U8 => DType::U8,
        S::I32 => DType::I32,
        S::I64 => DType::I64,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F32 => DType::F32,
        S::F64 => DType::F64,
        other => return Err(Error::unsupported("safetensors", format!("{what}: dtype {other:?}"))),
    })
}

fn to_st_dtype(d: DType) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        DType::Bool => S::BOOL,
        DType::U8 => S::U8,
        DType::I32 => S::I32,
        DType::I64 => S::I64,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::F32 => S::F32,
        DType::F64 => S::F64,
    }
}

/// Reads every tensor of a safetensors file (memory-mapped; each tensor is copied once into its buffer),
/// in the file's order.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    load_safetensors_to(path, Device::Cpu)
}

/// Like [`load_safetensors`], placing the tensors on `device`.
pub fn load_safetensors_to(path: impl AsRef<Path>, device: Device) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before this function returns; every byte is copied out.
    // A concurrent truncation of the file by another process could fault; that is the documented risk of
    // memory-mapped reads, which every safetensors reader accepts.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| Error::format(&what, e.to_string()))?;
    let mut names: Vec<(usize, String)> =
        st.tensors().into_iter().map(|(n, v)| (v.data().as_ptr() as usize, n)).collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for (_, name) in names {
        let v = st.tensor(&name).map_err(|e| Error::format(&what, e.to_string()))?;
        let dt = st_dtype(v.dtype(), &what)?;
        let data = HostData::from_le_bytes(dt, v.data(), &format!("{what}: tensor {name:?}"))?;
        out.push((name, Tensor::from_host(data, v.shape(), device)?));
    }
    Ok(out)
}

/// Writes tensors to a safetensors file atomically (temporary file, fsync, rename).
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        owned.push((name.to_string(), t.to_dtype(t.dtype())?.to_host()?.to_le_bytes(), t.shape().to_vec(), t.dtype()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, bytes, shape, dt)| {
            safetensors::tensor::TensorView::new(to_st_dtype(*dt), shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::format("safetensors", e.to_string()))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(views, None).map_err(|e| Error::format("safetensors", e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never a partial one.
///
/// - The temporary name is unique per process and call (`.<name>.<pid>.<n>.tmp`, created with
///   `create_new`), so concurrent saves to one path never share a temporary file.
/// - Temporary files of `path` left by a process that no longer runs (killed mid-save) are removed
///   on the next save.
/// - The file is fsynced before the rename and the directory after it, so the rename itself
///   survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::invalid("save", format!("{} is not a file path", path.display())))?;
    let name = name.to_string_lossy();
    remove_stale_temporaries(dir, &name);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // the rename is durable only once the directory entry is on disk (not possible on Windows)
        #[cfg(unix)]
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `.<name>.<pid>.<n>.tmp` files in `dir` whose process no longer runs (on Linux, where
/// `/proc` tells; elsewhere those older than an hour).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(rest) = file.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let stale = if Path::new("/proc/self").exists() {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600)
        };
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn npy_descr(d: DType) -> &'static str {
    match d {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F16 => "<f2",
        DType::BF16 => "<V2", // NumPy has no bfloat16; written as raw 2-byte values
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    }
}

/// Serialises a tensor as `.npy` bytes (format version 1.0, C order).
pub fn to_npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    if t.dtype() == DType::BF16 {
        return Err(Error::unsupported("npy", "NumPy has no bfloat16; convert with to_dtype(F32) first"));
    }
    let shape = t.shape().iter().map(|s| format!("{s},")).collect::<String>();
    let shape = if t.ndim() == 1 { shape } else { shape.trim_end_matches(',').to_string() };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': ({shape}), }}", npy_descr(t.dtype()));
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(t.to_host()?.to_le_bytes());
    Ok(out)
}

/// Parses `.npy` bytes (little-endian or single-byte dtypes, C order).
pub fn from_npy_bytes(bytes: &[u8], what: &str) -> Result<Tensor> {
    let h = parse_npy_header(bytes, what)?;
    let body = &bytes[h.data_start..];
    if body.len() != h.data_bytes {
        return Err(Error::format(
            what,
            format!("data has {} bytes, shape {:?} of {} needs {}", body.len(), h.shape, h.dtype, h.data_bytes),
        ));
    }
    Tensor::from_host(HostData::from_le_bytes(h.dtype, body, what)?, &h.shape, Device::Cpu)
}

/// What a `.npy` header declares.
struct NpyHeader {
    dtype: DType,
    shape: Vec<usize>,
    /// Where the data starts.
    data_start: usize,
    /// How many data bytes the shape and dtype need (checked: no overflow).
    data_bytes: usize,
}

/// Parses the magic, version and header of `.npy` bytes (the data may be absent).
fn parse_npy_header(bytes: &[u8], what: &str) -> Result<NpyHeader> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(Error::format(what, "not a .npy file (bad magic)"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(Error::format(what, format!("unsupported .npy version {v}"))),
    };
    let header = bytes.get(start..start + hlen).ok_or_else(|| Error::format(what, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| Error::format(what, "header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        Some(header[i + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| Error::format(what, "no descr"))?;
    if field("fortran_order").map(|s| s.starts_with("True")).unwrap_or(false) {
        return Err(Error::unsupported("npy", format!("{what}: Fortran-order arrays")));
    }
    let shape_s = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| Error::format(what, "no shape"))?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| Error::format(what, format!("bad shape {shape_s:?}"))))
        .collect::<Result<_>>()?;
    let dt = match descr {
        "|b1" => DType::Bool,
        "|u1" => DType::U8,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "<f2" => DType::F16,
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        other => return Err(Error::unsupported("npy", format!("{what}: dtype {other}"))),
    };
    let n = ember_storage::shape::checked_numel(&shape, "npy").map_err(|e| Error::format(what, e.to_string()))?;
    let need = n.checked_mul(dt.size_in_bytes()).ok_or_else(|| Error::format(what, "data size overflows"))?;
    Ok(NpyHeader { dtype: dt, shape, data_start: start + hlen, data_bytes: need })
}

/// Writes a `.npy` file atomically.
pub fn save_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    write_atomic(path.as_ref(), &to_npy_bytes(t)?)
}

/// Reads a `.npy` file.
pub fn load_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let p = path.as_ref();
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    from_npy_bytes(&bytes, &p.display().to_string())
}

/// Writes named tensors as an `.npz` archive (uncompressed, like `numpy.savez`), atomically.
pub fn save_npz(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut zw = zip::ZipWriter::new(&mut cursor);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, t) in tensors {
            zw.start_file(format!("{name}.npy"), opts).map_err(|e| Error::format("npz", e.to_string()))?;
            zw.write_all(&to_npy_bytes(t)?).map_err(|e| Error::io(path, e))?;
        }
        zw.finish().map_err(|e| Error::format("npz", e.to_string()))?;
    }
    write_atomic(path, &cursor.into_inner())
}

/// Reads every array of an `.npz` archive (stored or deflated entries), in archive order, named
/// without the `.npy` suffix.
pub fn load_npz(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let p = path.as_ref();
    let what = p.display().to_string();
    let file = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut za = zip::ZipArchive::new(file).map_err(|e| Error::format(&what, e.to_string()))?;
    let mut out = Vec::with_capacity(za.len());
    for i in 0..za.len() {
        let mut entry = za.by_index(i).map_err(|e| Error::format(&what, e.to_string()))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        let bytes = read_npy_entry(&mut entry, &format!("{what}: {name}"))?;
        out.push((name.clone(), from_npy_bytes(&bytes, &format!("{what}: {name}"))?));
    }
    Ok(out)
}

/// Reads one `.npy` stream (a possibly compressed archive entry) without trusting its length: the
/// header first, then exactly the bytes its shape and dtype declare (one more byte is tried, to
/// reject trailing data). A small compressed entry that inflates to gigabytes is rejected after at
/// most the declared size, not after inflating all of it.
fn read_npy_entry(r: &mut impl std::io::Read, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut fill = |bytes: &mut Vec<u8>, upto: usize| -> Result<()> {
        let want = upto.saturating_sub(bytes.len()) as u64;
        (&mut *r).take(want).read_to_end(bytes).map_err(|e| Error::format(what, format!("cannot inflate: {e}")))?;
        Ok(())
    };
    fill(&mut bytes, 12)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(Error::format(what, "not a .npy file (bad magic)"));
    }
    let start_and_len = match bytes[6] {
        1 => 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize,
        _ if bytes.len() >= 12 => 12 + u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        _ => return Err(Error::format(what, "truncated header")),
    };
    fill(&mut bytes, start_and_len)?;
    let h = parse_npy_header(&bytes, what)?;
    let total = h.data_start.checked_add(h.data_bytes).ok_or_else(|| Error::format(what, "data size overflows"))?;
    bytes.try_reserve_exact(total.saturating_sub(bytes.len())).map_err(|_| Error::out_of_memory("npz", total))?;
    fill(&mut bytes, total.saturating_add(1))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("ember-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.safetensors");
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
        let b = Tensor::from_vec(vec![true, false], [2]).unwrap();
        save_safetensors(&p, &[("a", &a.t().unwrap()), ("b", &b)]).unwrap();
        let back = load_safetensors(&p).unwrap();
        assert_eq!(back[0].0, "a");
        assert_eq!(back[0].1.shape(), &[3, 2]);
        assert_eq!(back[0].1.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(back[1].1.to_vec::<bool>().unwrap(), vec![true, false]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = load_safetensors(&p).unwrap_err().to_string();
        assert!(e.contains("invalid file"), "{e}");
        std::fs::write(&p, b"garbage").unwrap();
        assert!(load_safetensors(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn npz_round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("ember-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npz");
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
        let b = Tensor::from_vec(vec![7i64, 8, 9], [3]).unwrap();
        save_npz(&p, &[("weights", &a.t().unwrap()), ("ids", &b)]).unwrap();
        let back = load_npz(&p).unwrap();
        assert_eq!(back[0].0, "weights");
        assert_eq!(back[0].1.to_vec::<f32>().unwrap(), vec![1.0, 3.0, 2.0, 4.0]);
        assert_eq!(back[1].1.to_vec::<i64>().unwrap(), vec![7, 8, 9]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(load_npz(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn npy_round_trip_and_truncation() {
        let t = Tensor::from_vec(vec![1i64, -2, 3], [3]).unwrap();
        let bytes = to_npy_bytes(&t).unwrap();
        assert_eq!(from_npy_bytes(&bytes, "t").unwrap().to_vec::<i64>().unwrap(), vec![1, -2, 3]);
        assert!(from_npy_bytes(&bytes[..bytes.len() - 1], "t").is_err());
        assert!(from_npy_bytes(b"nope", "t").is_err());
        let m = Tensor::from_vec(vec![1.5f64, 2.5, 3.5, 4.5], [2, 2]).unwrap();
        let back = from_npy_bytes(&to_npy_bytes(&m).unwrap(), "m").unwrap();
        assert_eq!(back.shape(), &[2, 2]);
        assert_eq!(back.to_vec::<f64>().unwrap(), vec![1.5, 2.5, 3.5, 4.5]);
    }
}
