//! Reading `torch.save` files (`.pt`, `.pth`): the zip archive PyTorch writes since 1.6, a
//! `data.pkl` pickle plus one raw little-endian file per storage, read the way
//! `torch.load(weights_only=True)` does: only tensors, storages, containers (dict, OrderedDict,
//! list, tuple) and plain values (None, bool, int, float, str, bytes). Any other global, such as
//! a class or a function the pickle would call, is refused with its name; nothing is executed.
//!
//! ```no_run
//! # fn main() -> ember_storage::Result<()> {
//! // a PyTorch state_dict (`torch.save(model.state_dict(), "model.pt")`), keys as PyTorch has them
//! let state = ember_autograd::io::load_torch_state_dict("model.pt")?;
//! for (name, t) in &state {
//!     println!("{name}: {:?} {}", t.shape(), t.dtype());
//! }
//! # Ok(()) }
//! ```
//!
//! Tensors come back as dense CPU tensors: a view (a transposed weight, a slice) is copied out of
//! its storage, so no tensor keeps a larger storage alive. `requires_grad=True` (parameters saved
//! as `nn.Parameter`) is kept for floating tensors. Not supported, with a clear error: the legacy
//! pre-1.6 format, big-endian files, int8/int16/complex storages, and tensor subclasses.

use crate::pickle::{unpickle, Resolver, Value, MAX_DEPTH};
use crate::Tensor;
use ember_storage::{DType, Device, Error, HostData, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The largest `data.pkl` accepted (the pickle holds structure, not tensor data).
const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// A value of a `torch.save` file (what `torch.load(weights_only=True)` returns).
#[derive(Clone, Debug)]
pub enum TorchValue {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (within 64 bits).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A tensor (dense, CPU).
    Tensor(Tensor),
    /// A list.
    List(Vec<TorchValue>),
    /// A tuple.
    Tuple(Vec<TorchValue>),
    /// A dict or OrderedDict, in its order.
    Dict(Vec<(TorchValue, TorchValue)>),
}

impl TorchValue {
    /// Every tensor under this value with a dotted key: dict keys (strings or ints) and list or
    /// tuple positions joined by `.`, as a nested state_dict's names (`model.fc.weight`).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        self.collect("", &mut out);
        out
    }

    fn collect(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        match self {
            TorchValue::Tensor(t) => out.push((prefix.to_string(), t.clone())),
            TorchValue::List(v) | TorchValue::Tuple(v) => {
                v.iter().enumerate().for_each(|(i, x)| x.collect(&join(&i.to_string()), out))
            }
            TorchValue::Dict(kv) => {
                for (k, v) in kv {
                    let key = match k {
                        TorchValue::Str(s) => s.clone(),
                        TorchValue::Int(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    v.collect(&join(&key), out);
                }
            }
            _ => {}
        }
    }

    /// The value under string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&TorchValue> {
        match self {
            TorchValue::Dict(kv) => {
                kv.iter().find(|(k, _)| matches!(k, TorchValue::Str(s) if s == key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Reads a `torch.save` file (see the module docs for what is accepted).
pub fn load_torch(path: impl AsRef<Path>) -> Result<TorchValue> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_torch_bytes(&bytes, &what)
}

/// The tensors of a `torch.save` file under their dotted keys: a state_dict's own keys, or
/// `model.fc.weight` for one nested in a checkpoint dict. Load them into a module with
/// `ember_nn::load_state_dict`.
pub fn load_torch_state_dict(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    Ok(load_torch(path)?.tensors())
}

/// [`load_torch`] from bytes; `what` names the source in errors.
pub fn load_torch_bytes(bytes: &[u8], what: &str) -> Result<TorchValue> {
    if !bytes.starts_with(b"PK\x03\x04") {
        let msg = if bytes.first() == Some(&0x80) {
            "the legacy (PyTorch < 1.6) torch.save format is not supported; load and save it again with a current \
             PyTorch"
        } else {
            "not a torch.save file (no zip archive)"
        };
        return Err(Error::format(what, msg));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::format(what, format!("corrupt zip archive: {e}")))?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .ok_or_else(|| Error::format(what, "no data.pkl in the archive"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(order) = read_entry(&mut zip, &format!("{prefix}byteorder"), what, 16) {
        if order != b"little" {
            return Err(Error::unsupported(
                "torch.load",
                format!("{what}: byte order {:?}", String::from_utf8_lossy(&order)),
            ));
        }
    }
    let pickle = read_entry(&mut zip, &pkl_name, what, MAX_PICKLE_BYTES)?;
    let mut r = TorchResolver { zip, prefix, what, storages: HashMap::new() };
    let v = unpickle(&pickle, &mut r, what)?;
    convert(&v, what, 0)
}

/// Reads one archive entry of at most `limit` bytes. The entry's declared size is checked first
/// and at most one byte more than it is inflated, so a small compressed entry that would inflate
/// to gigabytes is refused early.
fn read_entry(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let f = zip.by_name(name).map_err(|e| Error::format(what, format!("entry {name}: {e}")))?;
    let declared = f.size();
    if declared > limit {
        return Err(Error::format(what, format!("entry {name} declares {declared} bytes, more than {limit}")));
    }
    let mut out = Vec::with_capacity(declared as usize);
    f.take(declared + 1).read_to_end(&mut out).map_err(|e| Error::format(what, format!("entry {name}: {e}")))?;
    if out.len() as u64 != declared {
        return Err(Error::format(
            what,
            format!("entry {name} holds {} bytes, not the {declared} it declares", out.len()),
        ));
    }
    Ok(out)
}

struct TorchResolver<'a> {
    zip: zip::ZipArchive<std::io::Cursor<&'a [u8]>>,
    prefix: String,
    what: &'a str,
    storages: HashMap<String, Tensor>,
}

/// The dtype of a typed-storage class name (`FloatStorage`).
fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

fn int(v: &Value, what: &str, field: &str) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(Error::format(what, format!("{field} must be an int, got {}", other.kind()))),
    }
}

fn ints(v: &Value, what: &str, field: &str) -> Result<Vec<usize>> {
    let Value::Tuple(t) = v else { return Err(Error::format(what, format!("{field} must be a tuple"))) };
    t.iter()
        .map(|x| usize::try_from(int(x, what, field)?).map_err(|_| Error::format(what, format!("negative {field}"))))
        .collect()
}

impl TorchResolver<'_> {
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value> {
        let what = self.what;
        let [storage, offset, size, stride, requires_grad, ..] = args else {
            return Err(Error::format(what, format!("_rebuild_tensor_v2 takes 6 or 7 arguments, got {}", args.len())));
        };
        let Value::Storage(storage) = storage else {
            return Err(Error::format(what, format!("_rebuild_tensor_v2 needs a storage, got {}", storage.kind())));
        };
        let offset = usize::try_from(int(offset, what, "storage_offset")?)
            .map_err(|_| Error::format(what, "negative storage offset"))?;
        let (size, stride) = (ints(size, what, "size")?, ints(stride, what, "stride")?);
        if size.len() != stride.len() {
            return Err(Error::format(what, format!("size {size:?} and stride {stride:?} differ in rank")));
        }
        let n = storage.numel();
        let numel = size.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
        let last = size.iter().zip(&stride).try_fold(offset, |a, (&s, &st)| {
            if s == 0 {
                Some(a)
            } else {
                (s - 1).checked_mul(st).and_then(|x| a.checked_add(x))
            }
        });
        match (numel, last) {
            (Some(0), _) => {}
            (Some(_), Some(last)) if last < n => {}
            _ => {
                return Err(Error::format(
                    what,
                    format!("tensor of size {size:?}, stride {stride:?}, offset {offset} reads past its storage of {n} elements"),
                ))
            }
        }
        let t = if numel == Some(0) {
            Tensor::zeros_with(&size, storage.dtype(), Device::Cpu)?
        } else {
            storage.as_strided(&size, &stride, offset)?.contiguous()?.detach()
        };
        let t = if matches!(requires_grad, Value::Bool(true)) && t.dtype().is_float() {
            t.requires_grad_(true)?
        } else {
            t
        };
        Ok(Value::Tensor(t))
    }

    fn load_storage(&mut self, pid: &Value) -> Result<Value> {
        let what = self.what;
        let Value::Tuple(t) = pid else { return Err(Error::format(what, "persistent id is not a tuple")) };
        let [Value::Str(tag), Value::Global(cls), Value::Str(key), _location, numel] = t.as_slice() else {
            return Err(Error::format(what, "persistent id is not ('storage', type, key, location, numel)"));
        };
        if tag != "storage" {
            return Err(Error::format(what, format!("persistent id of kind {tag:?}")));
        }
        let dtype = cls
            .strip_prefix("torch.")
            .and_then(storage_dtype)
            .ok_or_else(|| Error::unsupported("torch.load", format!("{what}: storage type {cls}")))?;
        let numel = usize::try_from(int(numel, what, "numel")?).map_err(|_| Error::format(what, "negative numel"))?;
        if let Some(s) = self.storages.get(key) {
            return Ok(Value::Storage(s.clone()));
        }
        let expect = numel.saturating_mul(dtype.size_in_bytes());
        let bytes = read_entry(&mut self.zip, &format!("{}data/{key}", self.prefix), what, expect as u64)?;
        if bytes.len() != expect {
            return Err(Error::format(
                what,
                format!("storage {key} holds {} bytes, but {numel} {dtype} elements need {expect}", bytes.len()),
            ));
        }
        let host = HostData::from_le_bytes(dtype, &bytes, what)?;
        let s = Tensor::from_host(host, &[numel], Device::Cpu)?;
        self.storages.insert(key.clone(), s.clone());
        Ok(Value::Storage(s))
    }
}

impl Resolver for TorchResolver<'_> {
    fn global(&mut self, module: &str, name: &str) -> Result<Value> {
        let full = format!("{module}.{name}");
        let allowed = matches!(
            full.as_str(),
            "collections.OrderedDict"
                | "torch._utils._rebuild_tensor_v2"
                | "torch._utils._rebuild_parameter"
                | "_codecs.encode"
        ) || (module == "torch" && storage_dtype(name).is_some());
        if allowed {
            Ok(Value::Global(full))
        } else {
            Err(Error::format(
                self.what,
                format!(
                    "refuses global `{full}`: only tensors, containers and plain values are loaded \
                     (as torch.load(weights_only=True)); nothing in the file is executed"
                ),
            ))
        }
    }

    fn call(&mut self, callable: &str, args: Vec<Value>) -> Result<Value> {
        let what = self.what;
        match callable {
            "collections.OrderedDict" if args.is_empty() => Ok(Value::Dict(Default::default())),
            "torch._utils._rebuild_tensor_v2" => self.rebuild_tensor(&args),
            "torch._utils._rebuild_parameter" => match args.as_slice() {
                [Value::Tensor(t), requires_grad, ..] => {
                    let grad = matches!(requires_grad, Value::Bool(true)) && t.dtype().is_float();
                    Ok(Value::Tensor(if grad { t.requires_grad_(true)? } else { t.clone() }))
                }
                _ => Err(Error::format(what, "_rebuild_parameter needs a tensor")),
            },
            "_codecs.encode" => match args.as_slice() {
                // protocol 2 writes bytes as encode(latin-1 text, "latin1")
                [Value::Str(s), Value::Str(enc)] if enc == "latin1" => {
                    let b: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    b.map(Value::Bytes).ok_or_else(|| Error::format(what, "bytes outside latin-1"))
                }
                _ => Err(Error::format(what, "_codecs.encode with unexpected arguments")),
            },
            other => Err(Error::format(what, format!("refuses to call `{other}` with {} arguments", args.len()))),
        }
    }

    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        self.load_storage(&pid)
    }
}

/// The public form of a pickle value, refusing what a checkpoint cannot hold at the top.
fn convert(v: &Value, what: &str, depth: usize) -> Result<TorchValue> {
    if depth > MAX_DEPTH {
        return Err(Error::format(what, format!("containers nested deeper than {MAX_DEPTH} (or a cycle)")));
    }
    let all = |items: &[Value]| items.iter().map(|x| convert(x, what, depth + 1)).collect::<Result<Vec<_>>>();
    Ok(match v {
        Value::None => TorchValue::None,
        Value::Bool(b) => TorchValue::Bool(*b),
        Value::Int(i) => TorchValue::Int(*i),
        Value::Float(f) => TorchValue::Float(*f),
        Value::Str(s) => TorchValue::Str(s.clone()),
        Value::Bytes(b) => TorchValue::Bytes(b.clone()),
        Value::Tensor(t) => TorchValue::Tensor(t.clone()),
        Value::Tuple(t) => TorchValue::Tuple(all(t)?),
        Value::List(l) => TorchValue::List(all(&l.borrow())?),
        Value::Dict(d) => TorchValue::Dict(
            d.borrow()
                .iter()
                .map(|(k, v)| Ok((convert(k, what, depth + 1)?, convert(v, what, depth + 1)?)))
                .collect::<Result<Vec<_>>>()?,
        ),
        Value::Global(g) => return Err(Error::format(what, format!("a bare global `{g}` in the result"))),
        Value::Storage(_) => return Err(Error::format(what, "a bare storage in the result")),
    })
}
