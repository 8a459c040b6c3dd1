//! Property tests of the shape logic: random chains of views checked element by element against a
//! naive model (an explicit list of source positions), NumPy broadcasting checked against direct index
//! arithmetic, and random (often invalid) arguments that must give `Ok` or `Err`, never a panic.

use ember::{DType, Tensor};
use proptest::prelude::*;

/// A view as an explicit row-major list of positions in the source.
#[derive(Clone, Debug)]
struct Model {
    shape: Vec<usize>,
    pos: Vec<usize>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    ember::storage::shape::contiguous_strides(shape).to_vec()
}

impl Model {
    fn new(shape: &[usize]) -> Model {
        Model { shape: shape.to_vec(), pos: (0..shape.iter().product()).collect() }
    }
    fn at(&self, m: &[usize]) -> usize {
        let s = strides(&self.shape);
        self.pos[m.iter().zip(&s).map(|(a, b)| a * b).sum::<usize>()]
    }
    /// A new view of `shape` whose element `m` is the old element `f(m)`.
    fn remap(&self, shape: Vec<usize>, f: impl Fn(&[usize]) -> Vec<usize>) -> Model {
        let n: usize = shape.iter().product();
        let s = strides(&shape);
        let pos = (0..n)
            .map(|k| {
                let m: Vec<usize> = s.iter().zip(&shape).map(|(&st, &sz)| (k / st.max(1)) % sz.max(1)).collect();
                self.at(&f(&m))
            })
            .collect();
        Model { shape, pos }
    }
}

#[derive(Clone, Debug)]
enum View {
    Permute(u64),
    Slice(usize, usize, usize, usize),
    Select(usize, usize),
    Unsqueeze(usize),
    Expand(usize, usize),
    Diagonal(isize, usize, usize),
    Unfold(usize, usize, usize),
    Flatten,
}

fn view_strategy() -> impl Strategy<Value = View> {
    prop_oneof![
        any::<u64>().prop_map(View::Permute),
        (0..4usize, 0..6usize, 0..7usize, 1..4usize).prop_map(|(d, a, b, s)| View::Slice(d, a, b, s)),
        (0..4usize, 0..6usize).prop_map(|(d, i)| View::Select(d, i)),
        (0..5usize).prop_map(View::Unsqueeze),
        (0..4usize, 1..4usize).prop_map(|(d, k)| View::Expand(d, k)),
        (-2..3isize, 0..4usize, 0..4usize).prop_map(|(o, a, b)| View::Diagonal(o, a, b)),
        (0..4usize, 1..3usize, 1..3usize).prop_map(|(d, k, s)| View::Unfold(d, k, s)),
        Just(View::Flatten),
    ]
}

/// Applies `v` to both the tensor and the model when it is valid for the current shape.
fn apply(t: &Tensor, m: &Model, v: &View) -> Option<(Tensor, Model)> {
    let nd = m.shape.len();
    match *v {
        View::Permute(seed) => {
            let mut p: Vec<usize> = (0..nd).collect();
            let mut s = seed;
            for i in (1..nd).rev() {
                p.swap(i, (s % (i as u64 + 1)) as usize);
                s /= i as u64 + 1;
            }
            let t2 = t.permute(p.iter().map(|&x| x as isize).collect::<Vec<_>>()).ok()?;
            let shape = p.iter().map(|&d| m.shape[d]).collect();
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = vec![0; nd];
                    for (i, &d) in p.iter().enumerate() {
                        o[d] = mi[i];
                    }
                    o
                }),
            ))
        }
        View::Slice(d, a, b, st) if d < nd => {
            let n = m.shape[d];
            let (a, b) = (a.min(n), b.min(n).max(a.min(n)));
            let t2 = t.slice(d as isize, Some(a as isize), Some(b as isize), st).ok()?;
            let mut shape = m.shape.clone();
            shape[d] = (b - a).div_ceil(st);
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = mi.to_vec();
                    o[d] = a + mi[d] * st;
                    o
                }),
            ))
        }
        View::Select(d, i) if d < nd && i < m.shape[d] => {
            let t2 = t.select(d as isize, i as isize).ok()?;
            let mut shape = m.shape.clone();
            shape.remove(d);
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = mi.to_vec();
                    o.insert(d, i);
                    o
                }),
            ))
        }
        View::Unsqueeze(d) if d <= nd && nd < 6 => {
            let t2 = t.unsqueeze(d as isize).ok()?;
            let mut shape = m.shape.clone();
            shape.insert(d, 1);
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = mi.to_vec();
                    o.remove(d);
                    o
                }),
            ))
        }
        View::Expand(d, k) if d < nd && m.shape[d] == 1 => {
            let mut shape = m.shape.clone();
            shape[d] = k;
            let t2 = t.expand(shape.iter().map(|&x| x as isize).collect::<Vec<_>>()).ok()?;
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = mi.to_vec();
                    o[d] = 0;
                    o
                }),
            ))
        }
        View::Diagonal(off, a, b) if a < nd && b < nd && a != b => {
            let t2 = t.diagonal(off, a as isize, b as isize).ok()?;
            let len = *t2.shape().last()?;
            let mut shape: Vec<usize> = (0..nd).filter(|&i| i != a && i != b).map(|i| m.shape[i]).collect();
            shape.push(len);
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = vec![0; nd];
                    let mut k = 0;
                    for (i, oi) in o.iter_mut().enumerate() {
                        if i != a && i != b {
                            *oi = mi[k];
                            k += 1;
                        }
                    }
                    let j = mi[mi.len() - 1];
                    let (ia, ib) = if off >= 0 { (j, j + off as usize) } else { (j + (-off) as usize, j) };
                    o[a] = ia;
                    o[b] = ib;
                    o
                }),
            ))
        }
        View::Unfold(d, k, st) if d < nd && k <= m.shape[d] => {
            let t2 = t.unfold(d as isize, k, st).ok()?;
            let mut shape = m.shape.clone();
            shape[d] = (m.shape[d] - k) / st + 1;
            shape.push(k);
            Some((
                t2,
                m.remap(shape, |mi| {
                    let mut o = mi[..nd].to_vec();
                    o[d] = mi[d] * st + mi[nd];
                    o
                }),
            ))
        }
        View::Flatten => {
            let t2 = t.reshape([-1]).ok()?;
            Some((t2, Model { shape: vec![m.pos.len()], pos: m.pos.clone() }))
        }
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn view_chains_match_the_naive_model(shape in proptest::collection::vec(1..5usize, 1..4), views in proptest::collection::vec(view_strategy(), 1..6)) {
        let n: usize = shape.iter().product();
        let base = Tensor::arange(n as i64).unwrap().reshape(shape.iter().map(|&s| s as isize).collect::<Vec<_>>()).unwrap();
        let (mut t, mut m) = (base, Model::new(&shape));
        for v in &views {
            if let Some((t2, m2)) = apply(&t, &m, v) {
                t = t2;
                m = m2;
                prop_assert_eq!(t.shape(), m.shape.as_slice());
                let got: Vec<usize> = t.to_vec::<i64>().unwrap().into_iter().map(|x| x as usize).collect();
                prop_assert_eq!(&got, &m.pos, "after {:?}", v);
                // a dense copy of the view agrees too
                let dense: Vec<usize> = t.contiguous().unwrap().to_vec::<i64>().unwrap().into_iter().map(|x| x as usize).collect();
                prop_assert_eq!(&dense, &m.pos);
            }
        }
    }

    #[test]
    fn broadcasting_matches_index_arithmetic(out in proptest::collection::vec(1..4usize, 1..4), mask_a in any::<u8>(), mask_b in any::<u8>(), drop_a in 0..3usize, transpose in any::<bool>()) {
        let a_shape: Vec<usize> = out.iter().enumerate().map(|(i, &s)| if mask_a >> i & 1 == 1 { 1 } else { s }).skip(drop_a.min(out.len() - 1)).collect();
        let b_shape: Vec<usize> = out.iter().enumerate().map(|(i, &s)| if mask_b >> i & 1 == 1 { 1 } else { s }).collect();
        let na: usize = a_shape.iter().product();
        let nb: usize = b_shape.iter().product();
        let a = Tensor::arange(na as i64).unwrap().to_dtype(DType::F64).unwrap().reshape(a_shape.iter().map(|&s| s as isize).collect::<Vec<_>>()).unwrap();
        let b = Tensor::arange(nb as i64).unwrap().to_dtype(DType::F64).unwrap().mul(1000.0).unwrap().reshape(b_shape.iter().map(|&s| s as isize).collect::<Vec<_>>()).unwrap();
        // optionally feed a non-contiguous copy of b with the same values
        let b = if transpose && b.ndim() >= 2 { b.mt().unwrap().contiguous().unwrap().mt().unwrap() } else { b };
        let got = a.add(&b).unwrap();
        // the broadcast shape, computed directly (a is right-aligned against b)
        let lead = b_shape.len() - a_shape.len();
        let out: Vec<usize> = (0..b_shape.len()).map(|i| if i < lead { b_shape[i] } else { a_shape[i - lead].max(b_shape[i]) }).collect();
        prop_assert_eq!(got.shape(), out.as_slice());
        let vals = got.to_vec::<f64>().unwrap();
        let so = strides(&out);
        for (k, v) in vals.iter().enumerate() {
            let m: Vec<usize> = so.iter().zip(&out).map(|(&st, &sz)| (k / st) % sz).collect();
            let lead = out.len() - a_shape.len();
            let ia: usize = a_shape.iter().enumerate().map(|(i, &s)| if s == 1 { 0 } else { m[lead + i] } * strides(&a_shape)[i]).sum();
            let ib: usize = b_shape.iter().enumerate().map(|(i, &s)| if s == 1 { 0 } else { m[i] } * strides(&b_shape)[i]).sum();
            prop_assert_eq!(*v, ia as f64 + 1000.0 * ib as f64);
        }
    }

    #[test]
    fn random_arguments_never_panic(shape in proptest::collection::vec(0..4usize, 0..4), a in -6..6isize, b in -6..6isize, c in 0..4usize) {
        let n: usize = shape.iter().product();
        let t = Tensor::arange(n as i64).unwrap().reshape(shape.iter().map(|&s| s as isize).collect::<Vec<_>>()).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = t.reshape([a, b]);
            let _ = t.view([a]);
            let _ = t.narrow(a, b, c);
            let _ = t.slice(a, Some(b), None, c);
            let _ = t.select(a, b);
            let _ = t.expand([a, b, c as isize]);
            let _ = t.permute([a, b]);
            let _ = t.transpose(a, b);
            let _ = t.squeeze_dim(a);
            let _ = t.unsqueeze(a);
            let _ = t.diagonal(a, b, c as isize);
            let _ = t.unfold(a, c, b.unsigned_abs());
            let _ = t.flip([a]);
            let _ = t.roll([b], [a]);
            let _ = t.repeat(&[c, c]);
            let _ = t.sum_dim([a], true);
            let _ = t.argmax(Some(a), false);
            let _ = t.cumsum(a);
            let _ = t.sort(a, true);
            let _ = t.topk_with(c, a, true);
            let _ = t.chunk(c, a);
            let _ = t.split(c, a);
            let idx = Tensor::from_vec(vec![a as i64, b as i64], [2]).unwrap();
            let _ = t.index_select(a, &idx);
            let _ = t.gather(a, &idx);
            let _ = t.matmul(&t);
            let _ = t.pad([a, b], ember::PadMode::Reflect, 0.0);
            let _ = t.pad([a, b], ember::PadMode::Constant, 0.0);
            let _ = t.tril(a as i64);
        }));
        prop_assert!(r.is_ok(), "an op panicked for shape {:?} with a={} b={} c={}", shape, a, b, c);
    }
}
