//! `Tensor`: a cheap, shareable handle to a strided view of backend storage.

use crate::device::backend;
use crate::graph::Node;
use ember_storage::{Backend, Buffer, DType, Device, Error, HostData, HostElement, Layout, Result, View};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The memory behind one or more tensors (a base tensor and all its views).
#[derive(Debug)]
pub(crate) struct Storage {
    pub(crate) buffer: Buffer,
    pub(crate) backend: Arc<dyn Backend>,
    /// Bumped by every in-place op, so autograd can detect a saved tensor that changed.
    pub(crate) version: AtomicU64,
}

pub(crate) struct TensorImpl {
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    /// Autograd state: the node that made this tensor (non-leaves; replaced when an in-place op
    /// rewrites the tensor's history), its gradient (leaves), flags.
    pub(crate) grad_fn: Mutex<Option<Arc<Node>>>,
    pub(crate) requires_grad: std::sync::atomic::AtomicBool,
    pub(crate) grad: Mutex<Option<Tensor>>,
    pub(crate) hooks: Mutex<Vec<crate::graph::Hook>>,
    /// Hooks run after a backward pass accumulated into this leaf's `.grad`.
    pub(crate) post_accumulate_hooks: Mutex<Vec<crate::graph::PostAccumulateHook>>,
    /// Set for differentiable views: the base tensor whose memory this one views.
    pub(crate) view: Option<ViewInfo>,
}

/// What a view remembers of its base, so that its history follows the base's when an in-place op
/// (through this view, another view, or the base itself) rewrites it.
pub(crate) struct ViewInfo {
    /// The base: a tensor that is not itself a view.
    pub(crate) base: Arc<TensorImpl>,
    /// The storage version when this view's history was last brought up to date.
    pub(crate) version_seen: AtomicU64,
    /// The base's `grad_fn` at that time.
    pub(crate) base_fn_seen: Mutex<Option<Arc<Node>>>,
}

impl ViewInfo {
    /// View information for a new view of `base` (a tensor that is not a view).
    pub(crate) fn of(base: &Arc<TensorImpl>) -> ViewInfo {
        ViewInfo {
            base: base.clone(),
            version_seen: AtomicU64::new(base.storage.version.load(Ordering::Acquire)),
            base_fn_seen: Mutex::new(lock(&base.grad_fn).clone()),
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking hook must not make the tensor unusable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TensorImpl {
    pub(crate) fn new(storage: Arc<Storage>, layout: Layout, dtype: DType) -> TensorImpl {
        TensorImpl {
            storage,
            layout,
            dtype,
            grad_fn: Mutex::new(None),
            requires_grad: std::sync::atomic::AtomicBool::new(false),
            grad: Mutex::new(None),
            hooks: Mutex::new(Vec::new()),
            post_accumulate_hooks: Mutex::new(Vec::new()),
            view: None,
        }
    }
}

/// An n-dimensional array on a device, with PyTorch's API.
///
/// `Clone` is cheap and shares storage (like assigning a tensor in Python). Views (`reshape` where
/// possible, `permute`, `narrow`, `slice`, `expand`, ...) share storage too; in-place ops (`add_`, `copy_`,
/// `fill_`, ...) write through to every view and bump the storage's version counter.
///
/// ```
/// use ember_autograd::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let y = x.matmul(&x.t().unwrap()).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 11.0, 11.0, 25.0]);
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorImpl>);

impl std::fmt::Debug for TensorImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorImpl(shape={:?}, dtype={})", self.layout.shape(), self.dtype)
    }
}

impl Tensor {
    pub(crate) fn from_buffer(buffer: Buffer, backend: Arc<dyn Backend>, shape: &[usize]) -> Tensor {
        let dtype = buffer.dtype();
        let storage = Arc::new(Storage { buffer, backend, version: AtomicU64::new(0) });
        Tensor(Arc::new(TensorImpl::new(storage, Layout::contiguous(shape), dtype)))
    }

    /// A new tensor sharing this one's storage through another layout, with no link to this one's
    /// history (`detach`, internal reinterpretations).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor(Arc::new(TensorImpl::new(self.0.storage.clone(), layout, self.0.dtype)))
    }

    /// A differentiable view of this tensor's memory through `layout`: it remembers its base, so that
    /// in-place ops on it (or on the base) keep gradients right. The caller records the view's node.
    pub(crate) fn view_with_layout(&self, layout: Layout) -> Tensor {
        let mut imp = TensorImpl::new(self.0.storage.clone(), layout, self.0.dtype);
        let base = self.0.view.as_ref().map(|v| &v.base).unwrap_or(&self.0);
        imp.view = Some(ViewInfo::of(base));
        Tensor(Arc::new(imp))
    }

    /// A new dense tensor on this tensor's backend.
    pub(crate) fn same_backend(&self, buffer: Buffer, shape: &[usize]) -> Tensor {
        Tensor::from_buffer(buffer, self.0.storage.backend.clone(), shape)
    }

    /// The backend ops on this tensor go to: its own, or, while a profile runs, the profiling
    /// wrapper around it (one relaxed atomic load when none runs).
    #[inline]
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        let b = &self.0.storage.backend;
        if crate::profiler::is_active() {
            return crate::profiler::wrapped(b);
        }
        b
    }

    /// The fused kernels of this tensor's backend, if it offers them (DESIGN.md decision 12).
    pub(crate) fn fused(&self) -> Option<&dyn ember_storage::FusedKernels> {
        self.backend().fused()
    }

    /// The fused kernels a backward pass needs because its forward pass used them.
    pub(crate) fn fused_for(&self, op: &str) -> Result<&dyn ember_storage::FusedKernels> {
        self.fused()
            .ok_or_else(|| Error::unsupported(op, "the backend offered fused kernels in forward but not in backward"))
    }

    /// The (buffer, layout) pair a backend op takes.
    pub(crate) fn v(&self) -> View<'_> {
        (&self.0.storage.buffer, &self.0.layout)
    }

    /// Moves host data onto `device` as a tensor of `shape`.
    pub fn from_host(data: HostData, shape: &[usize], device: Device) -> Result<Tensor> {
        let n = ember_storage::shape::checked_numel(shape, "from_vec")?;
        if data.len() != n {
            return Err(Error::shape(
                "from_vec",
                format!("{} elements cannot form shape {shape:?} ({n} elements)", data.len()),
            ));
        }
        let be = backend(device)?;
        let buf = be.upload(data)?;
        Ok(Tensor::from_buffer(buf, be, shape))
    }

    /// A CPU tensor that takes ownership of `data` (no copy).
    ///
    /// ```
    /// let t = ember_autograd::Tensor::from_vec(vec![1i64, 2, 3], &[3]).unwrap();
    /// assert_eq!(t.dtype(), ember_storage::DType::I64);
    /// ```
    pub fn from_vec<T: HostElement>(data: Vec<T>, shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("from_vec")?;
        Tensor::from_host(HostData::from_vec(data), shape, Device::Cpu)
    }

    /// A CPU tensor copied from a slice.
    pub fn from_slice<T: HostElement>(data: &[T], shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("from_slice")?;
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A zero-dimensional CPU tensor.
    pub fn scalar<T: HostElement>(value: T) -> Tensor {
        Tensor::from_vec(vec![value], crate::SCALAR).expect("one element fits shape []")
    }

    /// The elements in row-major order, copied to the host.
    pub fn to_host(&self) -> Result<HostData> {
        self.backend().download(self.v())
    }

    /// The elements as a `Vec<T>`; `T` must be the tensor's dtype (see [`Tensor::to_dtype`]).
    pub fn to_vec<T: HostElement>(&self) -> Result<Vec<T>> {
        self.to_host()?.into_vec()
    }

    /// A 2-d tensor's rows as vectors (PyTorch's `tolist()` for a matrix); `T` must be the dtype.
    pub fn to_vec2<T: HostElement>(&self) -> Result<Vec<Vec<T>>> {
        let [_, c] = self.dims()?;
        let flat = self.to_vec::<T>()?;
        Ok(if c == 0 { vec![vec![]; self.shape()[0]] } else { flat.chunks(c).map(<[T]>::to_vec).collect() })
    }

    /// A 3-d tensor's elements nested as `[i][j][k]`; `T` must be the dtype.
    pub fn to_vec3<T: HostElement>(&self) -> Result<Vec<Vec<Vec<T>>>> {
        let [a, _, _] = self.dims()?;
        (0..a).map(|i| self.select(0, i)?.to_vec2()).collect()
    }

    /// The elements converted to f64, whatever the dtype (handy in tests and printing).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.to_host()?.to_f64s())
    }

    /// The value of a one-element tensor as f64.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "item",
                format!("needs a tensor with one element, got shape {:?}", self.shape()),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// Sizes.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }
    /// The sizes as an array of `N`, for destructuring (`let [b, t, c] = x.dims()?;`); an error
    /// naming both ranks when the tensor does not have `N` dims.
    pub fn dims<const N: usize>(&self) -> Result<[usize; N]> {
        self.shape()
            .try_into()
            .map_err(|_| Error::shape("dims", format!("expected a tensor with {N} dims, got shape {:?}", self.shape())))
    }
    /// The sizes of a 2-d tensor: `let [n, c] = x.dims2()?;`.
    pub fn dims2(&self) -> Result<[usize; 2]> {
        self.dims()
    }
    /// The sizes of a 3-d tensor: `let [b, t, c] = x.dims3()?;`.
    pub fn dims3(&self) -> Result<[usize; 3]> {
        self.dims()
    }
    /// The sizes of a 4-d tensor: `let [n, c, h, w] = x.dims4()?;`.
    pub fn dims4(&self) -> Result<[usize; 4]> {
        self.dims()
    }
    /// Sizes (PyTorch's `size()`).
    pub fn size(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        self.0.layout.strides()
    }
    /// Rank.
    pub fn ndim(&self) -> usize {
        self.0.layout.ndim()
    }
    /// Rank (PyTorch's `dim()`).
    pub fn dim(&self) -> usize {
        self.ndim()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// Where the storage lives.
    pub fn device(&self) -> Device {
        self.backend().device()
    }
    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// True when the elements are dense and row-major.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// The backend buffer holding this tensor's storage (shared by its views; see
    /// [`layout`](Tensor::layout) for where this tensor lies in it). For backend and communication
    /// crates (NCCL collectives run on it); ordinary code never needs it.
    pub fn buffer(&self) -> &Buffer {
        &self.0.storage.buffer
    }

    /// The storage's version counter (bumped by in-place ops).
    pub fn version(&self) -> u64 {
        self.0.storage.version.load(Ordering::Acquire)
    }
    /// True when both handles are the same tensor (clones of one another): PyTorch's `a is b`.
    /// Tied weights are the same tensor in two places of a module.
    pub fn is_same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    /// True when both tensors view the same storage.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }
    /// Size of one dim (negative counts from the end).
    pub fn size_of(&self, dim: impl crate::Dim) -> Result<usize> {
        let dim = dim.to_isize();
        let d = self.0.layout.dim(dim, "size")?;
        Ok(self.shape().get(d).copied().unwrap_or(1))
    }

    /// A dense copy unless already contiguous (then `self`, shared).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() && self.0.layout.offset() == 0 {
            return Ok(self.clone());
        }
        let buf = self.backend().cast(self.v(), self.dtype())?;
        let out = self.same_backend(buf, self.shape());
        Ok(crate::graph::record_free(out, "contiguous", &[self], |g| Ok(smallvec::smallvec![Some(g.clone())])))
    }

    /// A dense copy that never shares storage (`clone()` in PyTorch).
    pub fn deep_clone(&self) -> Result<Tensor> {
        let buf = self.backend().cast(self.v(), self.dtype())?;
        let out = self.same_backend(buf, self.shape());
        Ok(crate::graph::record_free(out, "clone", &[self], |g| Ok(smallvec::smallvec![Some(g.clone())])))
    }

    /// Converts the elements to `dtype` (returns `self` when it already has it).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let buf = self.backend().cast(self.v(), dtype)?;
        let out = self.same_backend(buf, self.shape());
        if !dtype.is_float() {
            return Ok(out);
        }
        let back = self.dtype();
        Ok(crate::graph::record_free(out, "to_dtype", &[self], move |g| {
            Ok(smallvec::smallvec![Some(g.to_dtype(back)?)])
        }))
    }

    /// Moves to `device` (returns `self` when already there).
    pub fn to(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let out = Tensor::from_host(self.to_host()?, self.shape(), device)?;
        let back = self.device();
        Ok(crate::graph::record_free(out, "to", &[self], move |g| Ok(smallvec::smallvec![Some(g.to(back)?)])))
    }

    pub(crate) fn bump_version(&self) {
        self.0.storage.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Checks that every tensor is on `a`'s device, naming the op.
pub(crate) fn same_device(op: &str, tensors: &[&Tensor]) -> Result<()> {
    if let Some(first) = tensors.first() {
        // one backend object serves one device, so a shared backend settles it without asking
        if tensors.iter().all(|t| Arc::ptr_eq(t.backend(), first.backend())) {
            return Ok(());
        }
        let d = first.device();
        if let Some(t) = tensors.iter().find(|t| t.device() != d) {
            return Err(Error::device(op, format!("expected all tensors on one device, got {d} and {}", t.device())));
        }
    }
    Ok(())
}
