//! [`MpiGroup`]: collectives over MPI (Open MPI or MPICH, through rsmpi), run by one communication
//! thread per process.
//!
//! Design:
//! - **One thread owns MPI.** `MpiGroup::init` starts a thread that initialises MPI
//!   (`MPI_THREAD_FUNNELED`: only that thread ever calls MPI), runs the collectives it is sent in
//!   order, and finalises MPI when the group is dropped. Callers never block on MPI: a collective
//!   copies its tensor to host memory (GPU tensors are staged through the host), queues it, and gets
//!   a [`Work`]; the thread runs it while the caller computes (DDP's overlap), and `wait` writes the
//!   result back.
//! - **Every rank checks that every rank called the same thing.** Each collective first gathers a
//!   small header from every rank (which collective, dtype, op, root, shape); a mismatch is the same
//!   clear error on every rank (`rank 0: all_reduce f32 [3, 4]; rank 1: all_reduce f32 [4]`) instead
//!   of a hang or garbage.
//! - **No hangs.** Collectives are MPI's nonblocking ones (`MPI_Iallreduce`, ...), polled with
//!   `MPI_Test` up to a deadline (`EMBER_DIST_TIMEOUT` seconds, default 300). A peer that died or
//!   stopped calling collectives makes the others fail with "<collective> timed out after N s". After
//!   a timeout the group is unusable (its buffers may still be written by MPI; they are leaked, never
//!   freed) and dropping it calls `MPI_Abort`, as PyTorch's NCCL watchdog takes the process down.
//! - **dtypes**: all eight. f16/bf16 reductions are accumulated in f32 and rounded once (MPI has no
//!   half type); bool reduces with logical or (Sum, Max) and logical and (Product, Min); Avg is a sum
//!   divided by the world size, for floating dtypes only.
//! - Large host buffers come from the CPU backend's buffer cache and go back to it, so that their
//!   pages are not faulted in at every collective.
//! - Counts above 2^30 elements are split into several MPI calls (MPI counts are C ints);
//!   `all_gather` and `reduce_scatter` take at most 2^31 - 1 elements in all.

use crate::group::{check_root, check_scatter_inputs, write_into, ProcessGroup, ReduceOp};
use crate::host::{self, Header, Kind, HEADER_LEN};
use crate::work::{worker_gone, Work};
use ember_autograd::{Error, Result, Tensor};
use ember_ops_cpu::{recycle_host, take_host};
use ember_storage::{DType, HostData};
use mpi::ffi;
use mpi::traits::Communicator;
use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a collective waits for the other ranks before failing, unless `EMBER_DIST_TIMEOUT`
/// (seconds) says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a wait polls without sleeping.
const SPIN: Duration = Duration::from_millis(SPIN_MS);
const SPIN_MS: u64 = 200;

/// Elements per MPI call (MPI counts are C ints).
const CHUNK: usize = 1 << 30;

/// The timeout from `EMBER_DIST_TIMEOUT` (seconds, fractions allowed), or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var("EMBER_DIST_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v)),
            _ => Err(Error::invalid("EMBER_DIST_TIMEOUT", format!("expected a positive number of seconds, got {s:?}"))),
        },
    }
}

/// The process group of every process `mpirun`/`srun` started (`MPI_COMM_WORLD`). See the module
/// docs for how it works; one per process (MPI is initialised once).
pub struct MpiGroup {
    rank: usize,
    size: usize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

enum Task {
    AllReduce { data: HostData, shape: Vec<usize>, op: ReduceOp },
    Broadcast { data: HostData, shape: Vec<usize>, root: usize },
    AllGather { data: HostData, shape: Vec<usize> },
    ReduceScatter { data: HostData, shapes: Vec<Vec<usize>>, op: ReduceOp },
    Barrier,
}

impl Task {
    fn kind(&self) -> Kind {
        match self {
            Task::AllReduce { .. } => Kind::AllReduce,
            Task::Broadcast { .. } => Kind::Broadcast,
            Task::AllGather { .. } => Kind::AllGather,
            Task::ReduceScatter { .. } => Kind::ReduceScatter,
            Task::Barrier => Kind::Barrier,
        }
    }
}

enum Reply {
    Data(HostData),
    Gathered(Vec<(HostData, Vec<usize>)>),
    Nothing,
}

struct Job {
    task: Task,
    done: Arc<AtomicBool>,
    reply: mpsc::Sender<Result<Reply>>,
}

static STARTED: AtomicBool = AtomicBool::new(false);

impl MpiGroup {
    /// Initialises MPI from the launcher's environment (`mpirun -n 2 ...`, `srun`; run alone, it is
    /// a world of one) with the timeout of [`timeout_from_env`].
    pub fn init() -> Result<MpiGroup> {
        MpiGroup::init_with_timeout(timeout_from_env()?)
    }

    /// [`MpiGroup::init`] with an explicit collective timeout.
    pub fn init_with_timeout(timeout: Duration) -> Result<MpiGroup> {
        if STARTED.swap(true, Ordering::AcqRel) {
            return Err(Error::invalid(
                "MpiGroup::init",
                "MPI is initialised once per process; share the first MpiGroup (wrap it in an Arc)",
            ));
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("ember-mpi".into())
            .spawn(move || worker_main(ready_tx, jobs_rx, timeout))
            .map_err(|e| Error::backend("MpiGroup::init", format!("cannot start the communication thread: {e}")))?;
        let (rank, size) = ready_rx.recv().map_err(|_| worker_gone("MpiGroup::init"))??;
        Ok(MpiGroup { rank, size, jobs: Mutex::new(Some(jobs_tx)), worker: Mutex::new(Some(worker)) })
    }

    fn submit<T: Send + 'static>(
        &self,
        task: Task,
        finish: impl FnOnce(Reply) -> Result<T> + Send + 'static,
    ) -> Result<Work<T>> {
        let what = task.kind().name();
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let jobs = jobs.as_ref().ok_or_else(|| worker_gone(what))?;
            jobs.send(Job { task, done: done.clone(), reply: tx }).map_err(|_| worker_gone(what))?;
        }
        Ok(Work::pending(done, move || finish(rx.recv().map_err(|_| worker_gone(what))??)))
    }
}

impl Drop for MpiGroup {
    fn drop(&mut self) {
        // closing the queue ends the thread's loop: it finalises MPI (or aborts after a timeout)
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

fn unexpected(what: &str) -> Error {
    Error::backend(what, "the communication thread replied with the wrong kind of result")
}

impl ProcessGroup for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn name(&self) -> &str {
        "mpi"
    }

    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Work> {
        op.check("all_reduce", tensor.dtype())?;
        let data = tensor.to_host()?;
        let t = tensor.clone();
        self.submit(Task::AllReduce { data, shape: tensor.shape().to_vec(), op }, move |r| match r {
            Reply::Data(h) => write_into(&t, h),
            _ => Err(unexpected("all_reduce")),
        })
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Work> {
        check_root("broadcast", root, self.size)?;
        let data = tensor.to_host()?;
        let t = tensor.clone();
        let is_root = root == self.rank;
        self.submit(Task::Broadcast { data, shape: tensor.shape().to_vec(), root }, move |r| match r {
            Reply::Data(_) if is_root => Ok(()),
            Reply::Data(h) => write_into(&t, h),
            _ => Err(unexpected("broadcast")),
        })
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Work<Vec<Tensor>>> {
        let data = tensor.to_host()?;
        let device = tensor.device();
        self.submit(Task::AllGather { data, shape: tensor.shape().to_vec() }, move |r| match r {
            Reply::Gathered(parts) => {
                parts.into_iter().map(|(h, shape)| Tensor::from_host(h, &shape, device)).collect()
            }
            _ => Err(unexpected("all_gather")),
        })
    }

    fn reduce_scatter(&self, inputs: &[Tensor], op: ReduceOp) -> Result<Work<Tensor>> {
        let dtype = check_scatter_inputs("reduce_scatter", inputs, self.size)?;
        op.check("reduce_scatter", dtype)?;
        let parts = inputs.iter().map(|t| t.to_host()).collect::<Result<Vec<_>>>()?;
        let data = host::concat(dtype, parts)?;
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let (mine, device) = (shapes[self.rank].clone(), inputs[self.rank].device());
        self.submit(Task::ReduceScatter { data, shapes, op }, move |r| match r {
            Reply::Data(h) => Tensor::from_host(h, &mine, device),
            _ => Err(unexpected("reduce_scatter")),
        })
    }

    fn barrier(&self) -> Result<Work> {
        self.submit(Task::Barrier, |_| Ok(()))
    }
}

// ----------------------------------------------------------------------------------------------
// The communication thread

fn worker_main(ready: mpsc::Sender<Result<(usize, usize)>>, jobs: mpsc::Receiver<Job>, timeout: Duration) {
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        let _ = ready.send(Err(Error::backend(
            "MpiGroup::init",
            "MPI was already initialised in this process by other code; Ember needs to own its initialisation",
        )));
        return;
    };
    let world = universe.world();
    let comm = Comm { rank: world.rank() as usize, size: world.size() as usize, timeout, broken: Cell::new(None) };
    let _ = ready.send(Ok((comm.rank, comm.size)));
    while let Ok(job) = jobs.recv() {
        let what = job.task.kind().name();
        let result = match comm.broken.take() {
            Some(why) => {
                let e = Error::backend(what, format!("the process group is unusable after an earlier failure: {why}"));
                comm.broken.set(Some(why));
                Err(e)
            }
            None => comm.run(job.task),
        };
        job.done.store(true, Ordering::Release);
        let _ = job.reply.send(result);
    }
    if comm.broken.take().is_some() {
        // a collective may still be in flight: finalising could wait for it forever
        world.abort(1);
    }
    drop(universe);
}

/// The communicator as the worker thread sees it.
struct Comm {
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Why the group stopped working (a timeout), once it has.
    broken: Cell<Option<String>>,
}

/// MPI's element type for data of `dtype` moved bit for bit (half types as 16-bit words).
fn datatype(dtype: DType) -> ffi::MPI_Datatype {
    // SAFETY: these are rsmpi's read-only handles to MPI's predefined datatypes, set before main.
    unsafe {
        match dtype {
            DType::Bool => ffi::RSMPI_C_BOOL,
            DType::U8 => ffi::RSMPI_UINT8_T,
            DType::I32 => ffi::RSMPI_INT32_T,
            DType::I64 => ffi::RSMPI_INT64_T,
            DType::F16 | DType::BF16 => ffi::RSMPI_UINT16_T,
            DType::F32 => ffi::RSMPI_FLOAT,
            DType::F64 => ffi::RSMPI_DOUBLE,
        }
    }
}

/// MPI's reduction for `op` on `dtype` (bool: logical or / and).
fn mpi_op(op: ReduceOp, dtype: DType) -> ffi::MPI_Op {
    // SAFETY: read-only handles to MPI's predefined operations.
    unsafe {
        match (op, dtype == DType::Bool) {
            (ReduceOp::Sum | ReduceOp::Max, true) => ffi::RSMPI_LOR,
            (ReduceOp::Product | ReduceOp::Min | ReduceOp::Avg, true) => ffi::RSMPI_LAND,
            (ReduceOp::Sum | ReduceOp::Avg, false) => ffi::RSMPI_SUM,
            (ReduceOp::Product, false) => ffi::RSMPI_PROD,
            (ReduceOp::Max, false) => ffi::RSMPI_MAX,
            (ReduceOp::Min, false) => ffi::RSMPI_MIN,
        }
    }
}

fn world() -> ffi::MPI_Comm {
    // SAFETY: rsmpi's read-only handle to MPI_COMM_WORLD.
    unsafe { ffi::RSMPI_COMM_WORLD }
}

fn null_request() -> ffi::MPI_Request {
    // SAFETY: rsmpi's read-only null request handle.
    unsafe { ffi::RSMPI_REQUEST_NULL }
}

/// The base pointer of host data, for MPI.
fn ptr(h: &mut HostData) -> *mut c_void {
    ember_storage::with_host_data!(h, v => v.as_mut_ptr().cast())
}

fn check_rc(rc: c_int, what: &str, call: &str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::backend(what, format!("{call} failed with MPI error code {rc}")))
    }
}

fn c_count(n: usize, what: &str) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| {
        Error::unsupported(what, format!("{n} elements exceed what one MPI call moves (2^31 - 1 elements)"))
    })
}

impl Comm {
    fn run(&self, task: Task) -> Result<Reply> {
        match task {
            Task::AllReduce { data, shape, op } => {
                let dtype = data.dtype();
                self.agree("all_reduce", Header::new(Kind::AllReduce, Some(dtype), Some(op), 0, &shape))?;
                let mut wide = host::widen(data);
                self.all_reduce(&mut wide, op)?;
                if op == ReduceOp::Avg {
                    host::divide(&mut wide, self.size);
                }
                Ok(Reply::Data(host::narrow(wide, dtype)))
            }
            Task::Broadcast { mut data, shape, root } => {
                self.agree("broadcast", Header::new(Kind::Broadcast, Some(data.dtype()), None, root, &shape))?;
                self.broadcast(&mut data, root)?;
                Ok(Reply::Data(data))
            }
            Task::AllGather { data, shape } => {
                let h = Header::new(Kind::AllGather, Some(data.dtype()), None, 0, &shape);
                let all = self.agree("all_gather", h)?;
                self.all_gather(data, &shape, &all)
            }
            Task::ReduceScatter { data, shapes, op } => {
                let dtype = data.dtype();
                self.agree("reduce_scatter", Header::scatter(dtype, op, &shapes))?;
                let counts: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
                let mut mine = self.reduce_scatter(host::widen(data), &counts, op)?;
                if op == ReduceOp::Avg {
                    host::divide(&mut mine, self.size);
                }
                Ok(Reply::Data(host::narrow(mine, dtype)))
            }
            Task::Barrier => {
                self.agree("barrier", Header::new(Kind::Barrier, None, None, 0, &[]))?;
                let mut req = null_request();
                // SAFETY: a barrier touches no buffers; `req` outlives the wait below.
                let rc = unsafe { ffi::MPI_Ibarrier(world(), &mut req) };
                check_rc(rc, "barrier", "MPI_Ibarrier")?;
                self.wait(&mut req, "barrier")?;
                Ok(Reply::Nothing)
            }
        }
    }

    /// Polls a request until it completes or the timeout passes. On a timeout the group is marked
    /// broken; the caller must then leak every buffer the request uses (MPI may still write them).
    fn wait(&self, req: &mut ffi::MPI_Request, what: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut flag: c_int = 0;
            // SAFETY: `req` is a request this thread started and has not completed; the status is
            // not wanted.
            let rc = unsafe { ffi::MPI_Test(req, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            check_rc(rc, what, "MPI_Test")?;
            if flag != 0 {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                let why = format!(
                    "timed out after {:.1} s on rank {} of {}: another rank died, stopped calling collectives, or called them in a different order",
                    self.timeout.as_secs_f64(),
                    self.rank,
                    self.size
                );
                self.broken.set(Some(format!("{what} {why}")));
                return Err(Error::backend(what, why));
            }
            // Open MPI progresses only inside MPI calls: poll eagerly at first (yielding the core
            // to any computation that wants it), then back off so that a long wait costs little.
            if start.elapsed() < SPIN {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Exchanges headers; every rank gets the same verdict.
    fn agree(&self, what: &str, header: Header) -> Result<Vec<Header>> {
        let mut send = Box::new(header.0);
        let mut recv = vec![0i64; HEADER_LEN * self.size];
        let mut req = null_request();
        let n = HEADER_LEN as c_int;
        // SAFETY: `send` holds HEADER_LEN i64s and `recv` HEADER_LEN per rank; both stay alive (or
        // are leaked) until the request completes; `req` outlives the wait.
        let rc = unsafe {
            ffi::MPI_Iallgather(
                send.as_mut_ptr().cast(),
                n,
                ffi::RSMPI_INT64_T,
                recv.as_mut_ptr().cast(),
                n,
                ffi::RSMPI_INT64_T,
                world(),
                &mut req,
            )
        };
        check_rc(rc, what, "MPI_Iallgather")?;
        if let Err(e) = self.wait(&mut req, what) {
            std::mem::forget(send);
            std::mem::forget(recv);
            return Err(e);
        }
        let all: Vec<Header> = recv
            .chunks_exact(HEADER_LEN)
            .map(|c| {
                let mut h = [0i64; HEADER_LEN];
                h.copy_from_slice(c);
                Header(h)
            })
            .collect();
        Header::check_all(what, &all)?;
        Ok(all)
    }

    fn all_reduce(&self, data: &mut HostData, op: ReduceOp) -> Result<()> {
        let dtype = data.dtype();
        let (dt, mop, elem) = (datatype(dtype), mpi_op(op, dtype), dtype.size_in_bytes());
        let n = data.len();
        let mut out = take_host(dtype, n);
        let (src, dst) = (ptr(data).cast::<u8>(), ptr(&mut out).cast::<u8>());
        for start in (0..n).step_by(CHUNK) {
            let count = (n - start).min(CHUNK) as c_int;
            let mut req = null_request();
            // SAFETY: `src` and `dst` hold `n` elements of `dtype`, so the chunk [start, start +
            // count) is inside both; neither is touched by Rust until the request completes (or
            // they are leaked on a timeout).
            let rc = unsafe {
                ffi::MPI_Iallreduce(
                    src.add(start * elem).cast(),
                    dst.add(start * elem).cast(),
                    count,
                    dt,
                    mop,
                    world(),
                    &mut req,
                )
            };
            check_rc(rc, "all_reduce", "MPI_Iallreduce")?;
            if let Err(e) = self.wait(&mut req, "all_reduce") {
                std::mem::forget(std::mem::replace(data, HostData::U8(vec![])));
                std::mem::forget(out);
                return Err(e);
            }
        }
        recycle_host(std::mem::replace(data, out));
        Ok(())
    }

    fn broadcast(&self, data: &mut HostData, root: usize) -> Result<()> {
        let dtype = data.dtype();
        let (dt, elem) = (datatype(dtype), dtype.size_in_bytes());
        let n = data.len();
        let buf = ptr(data).cast::<u8>();
        for start in (0..n).step_by(CHUNK) {
            let count = (n - start).min(CHUNK) as c_int;
            let mut req = null_request();
            // SAFETY: `buf` holds `n` elements of `dtype` (every rank's header agreed on the shape),
            // the chunk is inside it, and it is untouched (or leaked) until the request completes.
            let rc =
                unsafe { ffi::MPI_Ibcast(buf.add(start * elem).cast(), count, dt, root as c_int, world(), &mut req) };
            check_rc(rc, "broadcast", "MPI_Ibcast")?;
            if let Err(e) = self.wait(&mut req, "broadcast") {
                std::mem::forget(std::mem::replace(data, HostData::U8(vec![])));
                return Err(e);
            }
        }
        Ok(())
    }

    fn all_gather(&self, mut data: HostData, shape: &[usize], all: &[Header]) -> Result<Reply> {
        let dtype = data.dtype();
        let numels: Vec<usize> = all.iter().map(Header::numel).collect();
        let total: usize = numels.iter().sum();
        c_count(total, "all_gather")?;
        let counts = numels.iter().map(|&n| n as c_int).collect::<Vec<_>>();
        let displs: Vec<c_int> = counts.iter().scan(0, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect();
        let mut out = take_host(dtype, total);
        let dt = datatype(dtype);
        let mut req = null_request();
        // SAFETY: `data` holds this rank's counts[rank] elements; `out` holds the sum of every
        // rank's count, laid out by `displs`; all four buffers stay alive (or are leaked) until
        // the request completes.
        let rc = unsafe {
            ffi::MPI_Iallgatherv(
                ptr(&mut data),
                counts[self.rank],
                dt,
                ptr(&mut out),
                counts.as_ptr(),
                displs.as_ptr(),
                dt,
                world(),
                &mut req,
            )
        };
        check_rc(rc, "all_gather", "MPI_Iallgatherv")?;
        if let Err(e) = self.wait(&mut req, "all_gather") {
            std::mem::forget((data, out, counts, displs));
            return Err(e);
        }
        let pieces = host::split(out, &numels);
        let shapes = all.iter().map(|h| {
            let mut s = shape.to_vec();
            if let Some(d0) = s.first_mut() {
                *d0 = h.dim0();
            }
            s
        });
        Ok(Reply::Gathered(pieces.into_iter().zip(shapes).collect()))
    }

    fn reduce_scatter(&self, mut data: HostData, counts: &[usize], op: ReduceOp) -> Result<HostData> {
        let dtype = data.dtype();
        c_count(counts.iter().sum(), "reduce_scatter")?;
        let counts: Vec<c_int> = counts.iter().map(|&n| n as c_int).collect();
        let mut out = take_host(dtype, counts[self.rank] as usize);
        let mut req = null_request();
        // SAFETY: `data` holds the sum of `counts` elements (the header check made every rank's
        // shapes agree), `out` this rank's count; they stay alive (or are leaked) until the
        // request completes.
        let rc = unsafe {
            ffi::MPI_Ireduce_scatter(
                ptr(&mut data),
                ptr(&mut out),
                counts.as_ptr(),
                datatype(dtype),
                mpi_op(op, dtype),
                world(),
                &mut req,
            )
        };
        check_rc(rc, "reduce_scatter", "MPI_Ireduce_scatter")?;
        if let Err(e) = self.wait(&mut req, "reduce_scatter") {
            std::mem::forget((data, out, counts));
            return Err(e);
        }
        recycle_host(data);
        Ok(out)
    }
}
