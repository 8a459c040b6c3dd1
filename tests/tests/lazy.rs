//! Lazy mode (ember-lazy): random elementwise DAGs are bit-identical to eager, chains are fused into
//! one group, in-place writes see the values pending ops read, training in lazy mode gives eager's
//! losses to the bit, and a loop that never reads a value keeps a bounded graph.

use ember::nn::functional::{mse_loss_with, Reduction};
use ember::nn::layers::Linear;
use ember::nn::{Module, ModuleExt};
use ember::optim::{Adam, AdamOptions, Optimizer, Sgd, SgdOptions};
use ember::{lazy, BinaryOp, DType, Device, Tensor, UnaryOp};
use proptest::prelude::*;
use std::sync::Mutex;

/// The lazy counters and the global random stream are process-wide: tests that read the counters
/// or seed the stream run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lazy_dev() -> Device {
    Device::Cpu.lazy()
}

/// Bits of every element (f32 and f64 alike), so NaNs compare too.
fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits() as u64).collect(),
        _ => t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect(),
    }
}

fn float_unary() -> Vec<UnaryOp> {
    UnaryOp::ALL.iter().copied().filter(|o| !o.is_predicate()).collect()
}

fn float_binary() -> Vec<BinaryOp> {
    BinaryOp::ALL.iter().copied().filter(|o| !o.is_predicate()).collect()
}

/// One step of a random program over a list of values.
#[derive(Clone, Debug)]
enum Instr {
    Unary(usize, usize),
    Binary(usize, usize, usize),
    /// A transposed view (last two dims) of a value.
    Transpose(usize),
    /// Add a broadcast row (`[last dim]`) to a value.
    AddRow(usize),
    /// Read a value in the middle (forces part of the graph).
    Read(usize),
    /// Multiply by a scalar.
    Scale(usize, f64),
}

fn instr() -> impl Strategy<Value = Instr> {
    let (nu, nb) = (float_unary().len(), float_binary().len());
    prop_oneof![
        4 => (0..nu, any::<prop::sample::Index>()).prop_map(|(o, i)| Instr::Unary(o, i.index(1 << 16))),
        4 => (0..nb, any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(o, a, b)| Instr::Binary(o, a.index(1 << 16), b.index(1 << 16))),
        1 => any::<prop::sample::Index>().prop_map(|i| Instr::Transpose(i.index(1 << 16))),
        1 => any::<prop::sample::Index>().prop_map(|i| Instr::AddRow(i.index(1 << 16))),
        1 => any::<prop::sample::Index>().prop_map(|i| Instr::Read(i.index(1 << 16))),
        1 => (any::<prop::sample::Index>(), -3.0f64..3.0).prop_map(|(i, s)| Instr::Scale(i.index(1 << 16), s)),
    ]
}

/// Runs `prog` on `device` from the same leaves; returns every value (moved back to the CPU).
fn run(prog: &[Instr], leaves: &[Tensor], row: &Tensor, device: Device) -> Vec<Tensor> {
    let (un, bin) = (float_unary(), float_binary());
    let mut vals: Vec<Tensor> = leaves.iter().map(|t| t.to(device).unwrap()).collect();
    let row = row.to(device).unwrap();
    let mut reads = vec![];
    for ins in prog {
        let n = vals.len();
        let v = match *ins {
            Instr::Unary(o, i) => vals[i % n].unary(un[o]).unwrap(),
            Instr::Binary(o, a, b) => {
                let (x, y) = (&vals[a % n], &vals[b % n]);
                // operands of one shape (a transposed value pairs with its own kind)
                let y = if x.shape() == y.shape() { y.clone() } else { y.t().unwrap() };
                x.binary(bin[o], &y).unwrap()
            }
            Instr::Transpose(i) => vals[i % n].t().unwrap(),
            Instr::AddRow(i) => {
                let x = &vals[i % n];
                let r =
                    if x.shape()[1] == row.shape()[0] { row.clone() } else { row.narrow(0, 0, x.shape()[1]).unwrap() };
                x.add(&r).unwrap()
            }
            Instr::Read(i) => {
                reads.push(bits(&vals[i % n]));
                continue;
            }
            Instr::Scale(i, s) => vals[i % n].mul(s).unwrap(),
        };
        vals.push(v);
    }
    vals.into_iter().map(|t| t.to(Device::Cpu).unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random elementwise DAGs (ops from the op table, broadcasting, transposed views, shared
    /// subexpressions, values read in the middle) give eager's bits in lazy mode.
    #[test]
    fn random_elementwise_dags_are_bit_identical_to_eager(
        rows in 1usize..6,
        cols in 1usize..6,
        f64_dtype in any::<bool>(),
        seed in 0u64..1000,
        prog in prop::collection::vec(instr(), 1..24),
    ) {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        ember::manual_seed(seed);
        let dt = if f64_dtype { DType::F64 } else { DType::F32 };
        // a square shape lets transposed values meet untransposed ones
        let n = rows.max(cols);
        let leaves: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn([n, n]).unwrap().mul(2.0).unwrap().to_dtype(dt).unwrap())
            .collect();
        let row = Tensor::randn([n]).unwrap().to_dtype(dt).unwrap();
        let eager = run(&prog, &leaves, &row, Device::Cpu);
        let lz = run(&prog, &leaves, &row, lazy_dev());
        prop_assert_eq!(eager.len(), lz.len());
        for (k, (e, l)) in eager.iter().zip(&lz).enumerate() {
            prop_assert_eq!(bits(e), bits(l), "value {} of {:?}", k, prog);
        }
    }
}

fn gelu_tanh(x: &Tensor) -> Tensor {
    let inner =
        x.add(&x.mul(x).unwrap().mul(x).unwrap().mul(0.044715).unwrap()).unwrap().mul(0.7978845608028654).unwrap();
    x.mul(0.5).unwrap().mul(&inner.tanh().unwrap().add(1.0).unwrap()).unwrap()
}

#[test]
fn a_gelu_chain_runs_as_one_group_with_eager_bits() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ember::manual_seed(3);
    let x = Tensor::randn([1000, 37]).unwrap();
    let eager = gelu_tanh(&x);
    let before = lazy::stats();
    let y = gelu_tanh(&x.to(lazy_dev()).unwrap());
    let recorded = lazy::stats();
    assert_eq!(recorded.groups, before.groups, "nothing runs until a value is read");
    assert_eq!(bits(&y), bits(&eager));
    let after = lazy::stats();
    assert_eq!(after.groups - before.groups, 1, "one fused group");
    assert!(after.fused_ops - before.fused_ops >= 9, "{before:?} -> {after:?}");
    assert_eq!(after.materialised - before.materialised, 1, "only the result is written");
}

#[test]
fn in_place_writes_see_what_pending_values_read() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap().to(lazy_dev()).unwrap();
    let y = x.add(1.0).unwrap().mul(2.0).unwrap(); // pending, reads x
    x.copy_(&Tensor::from_vec(vec![10.0f32, 20.0, 30.0], [3]).unwrap().to(lazy_dev()).unwrap()).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0, 6.0, 8.0], "y was computed from the old x");
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![10.0, 20.0, 30.0]);
    // writing into a pending value computes it first, then updates it
    let z = x.mul(0.5).unwrap();
    z.add_(1.0).unwrap();
    assert_eq!(z.to_vec::<f32>().unwrap(), vec![6.0, 11.0, 16.0]);
}

#[derive(ember::nn::Module)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> ember::Result<Tensor> {
        let h = self.fc1.forward(x)?;
        // a composed activation, so training has elementwise chains to fuse
        let h = h.mul(&h.sigmoid()?)?.add(&h.mul(0.1)?)?;
        self.fc2.forward(&h)
    }
}

fn train(device: Device, adam: bool, steps: usize) -> (Vec<u64>, Vec<u64>) {
    ember::manual_seed(7);
    let mut m = Mlp { fc1: Linear::new(8, 16).unwrap(), fc2: Linear::new(16, 2).unwrap() };
    m.to_device(device).unwrap();
    let x = Tensor::randn([32, 8]).unwrap().to(device).unwrap();
    let t = Tensor::randn([32, 2]).unwrap().to(device).unwrap();
    let mut opt: Box<dyn Optimizer> = if adam {
        Box::new(Adam::adam(m.parameters(), AdamOptions::adam(0.01)).unwrap())
    } else {
        Box::new(Sgd::sgd(m.parameters(), SgdOptions::new(0.05).momentum(0.9)).unwrap())
    };
    let mut losses = vec![];
    for _ in 0..steps {
        opt.zero_grad().unwrap();
        let loss = mse_loss_with(&m.forward(&x).unwrap(), &t, Reduction::Mean).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        losses.push(loss.item().unwrap().to_bits());
    }
    (losses, bits(&m.fc2.weight.to(Device::Cpu).unwrap()))
}

#[test]
fn training_in_lazy_mode_gives_eager_losses_to_the_bit() {
    // the global random stream seeds both models: no other test may draw from it meanwhile
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for adam in [false, true] {
        let (le, we) = train(Device::Cpu, adam, 15);
        let (ll, wl) = train(lazy_dev(), adam, 15);
        assert_eq!(le, ll, "losses (adam: {adam})");
        assert_eq!(we, wl, "weights (adam: {adam})");
    }
}

#[test]
fn a_loop_that_never_reads_keeps_a_bounded_graph() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = lazy::stats().live_buffers;
    let start = Tensor::randn([64]).unwrap();
    let mut eager = start.clone();
    let mut x = start.to(lazy_dev()).unwrap();
    let mut peak = 0;
    for _ in 0..10_000 {
        x = x.mul(0.5).unwrap().add(1.0).unwrap().tanh().unwrap();
        eager = eager.mul(0.5).unwrap().add(1.0).unwrap().tanh().unwrap();
        peak = peak.max(lazy::stats().live_buffers - base);
    }
    // the chain is evaluated whenever it reaches the depth limit, so it never grows without bound
    assert!(peak <= 3 * ember_lazy_depth() + 8, "peak live lazy buffers {peak}");
    lazy::sync().unwrap();
    assert_eq!(lazy::stats().pending_buffers, 0);
    assert_eq!(bits(&x.to(Device::Cpu).unwrap()), bits(&eager), "10,000 steps of tanh(x/2 + 1)");
}

fn ember_lazy_depth() -> usize {
    ember::lazy::MAX_DEPTH
}

#[test]
fn a_lazy_training_loop_keeps_a_flat_buffer_count() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ember::manual_seed(11);
    let mut m = Mlp { fc1: Linear::new(4, 8).unwrap(), fc2: Linear::new(8, 1).unwrap() };
    m.to_device(lazy_dev()).unwrap();
    let x = Tensor::randn([16, 4]).unwrap().to(lazy_dev()).unwrap();
    let t = Tensor::randn([16, 1]).unwrap().to(lazy_dev()).unwrap();
    let mut opt = Sgd::sgd(m.parameters(), SgdOptions::new(0.01)).unwrap();
    let mut counts = vec![];
    for step in 0..10_000 {
        opt.zero_grad().unwrap();
        // the loss is never read: nothing but the optimizer's in-place writes forces evaluation
        mse_loss_with(&m.forward(&x).unwrap(), &t, Reduction::Mean).unwrap().backward().unwrap();
        opt.step().unwrap();
        if step == 100 || step == 9_999 {
            counts.push(lazy::stats().live_buffers);
        }
    }
    assert!(counts[1] <= counts[0], "live lazy buffers grew: {counts:?}");
    let loss = mse_loss_with(&m.forward(&x).unwrap(), &t, Reduction::Mean).unwrap().item().unwrap();
    assert!(loss.is_finite());
}

/// A residual block (conv, batch norm in training mode, relu, conv, + x) trains in lazy mode with
/// eager's bits: the fused kernels the lazy device forwards hand back lazy buffers.
#[test]
fn a_conv_batch_norm_block_gives_eager_bits() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = |device: Device| {
        ember::manual_seed(5);
        let mut conv1 = ember::nn::layers::Conv2d::new(4, 4, [3, 3]).unwrap();
        let mut bn = ember::nn::layers::BatchNorm2d::new(4).unwrap();
        let mut conv2 = ember::nn::layers::Conv2d::new(4, 4, [3, 3]).unwrap();
        conv1.to_device(device).unwrap();
        bn.to_device(device).unwrap();
        conv2.to_device(device).unwrap();
        let x = Tensor::randn([2, 4, 7, 7]).unwrap().to(device).unwrap().requires_grad_(true).unwrap();
        let h = bn.forward(&conv1.forward(&x).unwrap()).unwrap().relu().unwrap();
        let y = conv2.forward(&h).unwrap().add(&x.narrow(2, 2, 3).unwrap().narrow(3, 2, 3).unwrap()).unwrap();
        y.sum().unwrap().backward().unwrap();
        let cpu = |t: &Tensor| bits(&t.to(Device::Cpu).unwrap());
        let counter = bn.num_batches_tracked.as_ref().unwrap().to(Device::Cpu).unwrap().to_vec::<i64>().unwrap();
        (cpu(&y), cpu(&x.grad().unwrap()), cpu(bn.running_mean.as_ref().unwrap()), counter)
    };
    assert_eq!(run(Device::Cpu), run(lazy_dev()));
}

/// A transposed view goes through the same vectorised loops as dense input, so a NaN comes out
/// with the sign it has there, eager or lazy (silu of a transposed +NaN gave -NaN eagerly and +NaN
/// lazily: scalar code may swap a product's operands, and x86 returns the first operand's NaN).
#[test]
fn nan_signs_do_not_depend_on_the_layout() {
    let x =
        Tensor::from_vec(vec![f32::NAN, 1.0, -2.0, -f32::NAN, 0.5, f32::NEG_INFINITY], [2, 3]).unwrap().t().unwrap();
    let dense = x.contiguous().unwrap();
    let lazy_x = x.to(lazy_dev()).unwrap();
    let ops: [fn(&Tensor) -> ember::Result<Tensor>; 5] = [
        Tensor::silu,
        Tensor::sigmoid,
        Tensor::tanh,
        |t| t.mul(&t.neg()?),
        |t| t.add(&t.t()?.contiguous()?.t()?.neg()?),
    ];
    for (k, f) in ops.iter().enumerate() {
        let want = bits(&f(&dense).unwrap());
        assert_eq!(bits(&f(&x).unwrap()), want, "op {k}: a transposed view against dense input");
        assert_eq!(bits(&f(&lazy_x).unwrap().to(Device::Cpu).unwrap()), want, "op {k}: lazy against eager");
    }
}
