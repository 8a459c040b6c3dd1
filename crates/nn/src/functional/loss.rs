//! The losses of `torch.nn.functional`, as compositions of differentiable tensor ops (so their
//! gradients, and gradients of gradients, come from autograd).

use ember_autograd::{Error, Result, Tensor};

/// How a loss reduces its per-element values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Per-element losses.
    None,
    /// The mean (for weighted class losses: divided by the total weight).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// The sum divided by the batch size (`kl_div` only).
    BatchMean,
}

impl Reduction {
    /// Parses PyTorch's strings: "none", "mean", "sum", "batchmean".
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Reduction::None,
            "mean" => Reduction::Mean,
            "sum" => Reduction::Sum,
            "batchmean" => Reduction::BatchMean,
            _ => return Err(Error::invalid("loss", format!("unknown reduction {s:?}"))),
        })
    }
}

fn reduce(op: &str, l: Tensor, r: Reduction) -> Result<Tensor> {
    match r {
        Reduction::None => Ok(l),
        Reduction::Mean => l.mean(),
        Reduction::Sum => l.sum(),
        Reduction::BatchMean => Err(Error::invalid(op, "reduction 'batchmean' is only for kl_div")),
    }
}

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!("input {:?} and target {:?} must have the same shape", a.shape(), b.shape()),
        ));
    }
    Ok(())
}

/// Mean squared error.
pub fn mse_loss_with(input: &Tensor, target: &Tensor, r: Reduction) -> Result<Tensor> {
    if let Some(y) = ember_autograd::autocast_op("mse_loss", &[input, target], |t| mse_loss_with(&t[0], &t[1], r))? {
        return Ok(y);
    }
    same_shape("mse_loss", input, target)?;
    let d = input.sub(target)?;
    reduce("mse_loss", d.mul(&d)?, r)
}

/// Mean absolute error.
pub fn l1_loss_with(input: &Tensor, target: &Tensor, r: Reduction) -> Result<Tensor> {
    if let Some(y) = ember_autograd::autocast_op("l1_loss", &[input, target], |t| l1_loss_with(&t[0], &t[1], r))? {
        return Ok(y);
    }
    same_shape("l1_loss", input, target)?;
    reduce("l1_loss", input.sub(target)?.abs()?, r)
}

/// Smooth L1: quadratic below `beta`, linear above.
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor, r: Reduction, beta: f64) -> Result<Tensor> {
    if let Some(y) =
        ember_autograd::autocast_op("smooth_l1_loss", &[input, target], |t| smooth_l1_loss(&t[0], &t[1], r, beta))?
    {
        return Ok(y);
    }
    same_shape("smooth_l1_loss", input, target)?;
    let d = input.sub(target)?.abs()?;
    if beta == 0.0 {
        return reduce("smooth_l1_loss", d, r);
    }
    let quad = d.mul(&d)?.mul(0.5 / beta)?;
    let lin = d.sub(0.5 * beta)?;
    reduce("smooth_l1_loss", Tensor::where_cond(&d.lt(beta)?, &quad, &lin)?, r)
}

/// Huber: quadratic up to `delta`, then `delta · (|d| − delta/2)`.
pub fn huber_loss(input: &Tensor, target: &Tensor, r: Reduction, delta: f64) -> Result<Tensor> {
    if let Some(y) =
        ember_autograd::autocast_op("huber_loss", &[input, target], |t| huber_loss(&t[0], &t[1], r, delta))?
    {
        return Ok(y);
    }
    same_shape("huber_loss", input, target)?;
    let d = input.sub(target)?.abs()?;
    let quad = d.mul(&d)?.mul(0.5)?;
    let lin = d.sub(0.5 * delta)?.mul(delta)?;
    reduce("huber_loss", Tensor::where_cond(&d.le(delta)?, &quad, &lin)?, r)
}

/// Options of [`cross_entropy`] and [`nll_loss`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct ClassLossOptions<'a> {
    /// Per-class weights `[C]`.
    pub weight: Option<&'a Tensor>,
    /// Targets equal to this contribute nothing (default −100).
    pub ignore_index: i64,
    /// Reduction (default mean: weighted mean over non-ignored targets).
    pub reduction: Reduction,
    /// Mix of the target with the uniform distribution (cross_entropy only).
    pub label_smoothing: f64,
}

impl Default for ClassLossOptions<'_> {
    fn default() -> Self {
        ClassLossOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean, label_smoothing: 0.0 }
    }
}

/// Mean squared error, averaged (`F.mse_loss(input, target)`).
pub fn mse_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    mse_loss_with(input, target, Reduction::Mean)
}

/// Mean absolute error, averaged (`F.l1_loss(input, target)`).
pub fn l1_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    l1_loss_with(input, target, Reduction::Mean)
}

/// Cross-entropy with PyTorch's defaults (`F.cross_entropy(logits, target)`): mean over the
/// targets, no weights, ignore_index −100, no label smoothing. [`cross_entropy_with`] takes options.
pub fn cross_entropy(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    cross_entropy_with(input, target, &ClassLossOptions::default())
}

/// Negative log-likelihood with PyTorch's defaults (`F.nll_loss(log_probs, target)`).
pub fn nll_loss(log_probs: &Tensor, target: &Tensor) -> Result<Tensor> {
    nll_loss_with(log_probs, target, &ClassLossOptions::default())
}

/// Binary cross-entropy of probabilities, averaged, no weights (`F.binary_cross_entropy(p, y)`).
pub fn binary_cross_entropy(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    binary_cross_entropy_with(input, target, None, Reduction::Mean)
}

/// Binary cross-entropy on logits, averaged, no weights (`F.binary_cross_entropy_with_logits`).
pub fn binary_cross_entropy_with_logits(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    binary_cross_entropy_with_logits_opts(input, target, None, None, Reduction::Mean)
}

/// Moves the class dim (1) last and flattens: `[N, C, d...]` → `[N·d..., C]`; `[C]` → `[1, C]`.
fn classes_last(x: &Tensor) -> Result<Tensor> {
    match x.ndim() {
        1 => x.unsqueeze(0),
        2 => Ok(x.clone()),
        n => {
            let mut perm: Vec<isize> = vec![0];
            perm.extend(2..n as isize);
            perm.push(1);
            let c = x.shape()[1] as isize;
            x.permute(&perm)?.reshape([-1, c])
        }
    }
}

/// Reshapes per-sample losses `[N·d...]` back to the target's shape.
fn per_sample_shape(l: Tensor, target_shape: &[usize]) -> Result<Tensor> {
    let s: Vec<isize> = target_shape.iter().map(|&x| x as isize).collect();
    l.reshape(&s)
}

/// Negative log-likelihood of class indices under log-probabilities `[N, C, d...]` (or `[C]`).
pub fn nll_loss_with(log_probs: &Tensor, target: &Tensor, o: &ClassLossOptions<'_>) -> Result<Tensor> {
    if let Some(y) = ember_autograd::autocast_op("nll_loss", &[log_probs, target], |t| nll_loss_with(&t[0], &t[1], o))?
    {
        return Ok(y);
    }
    let (per, w_sel, _) = nll_parts(log_probs, target, o.weight, o.ignore_index, "nll_loss")?;
    finish_class_loss(per, &w_sel, target.shape(), o.reduction)
}

/// Per-sample −w[t]·logp[t] (flattened), the selected weights (0 where ignored), the ignore mask.
fn nll_parts(
    log_probs: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    op: &str,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !target.dtype().is_int() {
        return Err(Error::dtype(op, format!("class-index target must be an integer tensor, got {}", target.dtype())));
    }
    let lp = classes_last(log_probs)?;
    let c = lp.shape()[1];
    let t = target.reshape([-1])?;
    if t.shape()[0] != lp.shape()[0] {
        return Err(Error::shape(
            op,
            format!("input {:?} does not fit target {:?}", log_probs.shape(), target.shape()),
        ));
    }
    let ignored = t.eq(ignore_index as f64)?;
    let safe_t = t.masked_fill(&ignored, 0.0)?;
    let bad = safe_t.lt(0.0)?.logical_or(&safe_t.ge(c as f64)?)?.any()?.item()? != 0.0;
    if bad {
        return Err(Error::invalid(op, format!("target values must be in [0, {c}) or ignore_index={ignore_index}")));
    }
    let picked = lp.gather(1, &safe_t.unsqueeze(1)?)?.squeeze_dim(1)?;
    let keep = ignored.logical_not()?.to_dtype(lp.dtype())?;
    let w_sel = match weight {
        Some(w) => {
            if w.shape() != [c] {
                return Err(Error::shape(op, format!("weight must have shape [{c}], got {:?}", w.shape())));
            }
            w.to_dtype(lp.dtype())?.index_select(0, &safe_t)?.mul(&keep)?
        }
        None => keep,
    };
    Ok((picked.neg()?.mul(&w_sel)?, w_sel, ignored))
}

fn finish_class_loss(per: Tensor, w_sel: &Tensor, target_shape: &[usize], r: Reduction) -> Result<Tensor> {
    match r {
        Reduction::None => per_sample_shape(per, target_shape),
        Reduction::Sum => per.sum(),
        Reduction::Mean => per.sum()?.div(&w_sel.sum()?),
        Reduction::BatchMean => Err(Error::invalid("nll_loss", "reduction 'batchmean' is only for kl_div")),
    }
}

/// Cross-entropy of logits `[N, C, d...]` (or `[C]`) against class indices (integer target) or
/// class probabilities (floating target of the input's shape), with weights, ignore_index and
/// label smoothing as in PyTorch.
pub fn cross_entropy_with(input: &Tensor, target: &Tensor, o: &ClassLossOptions<'_>) -> Result<Tensor> {
    if let Some(y) =
        ember_autograd::autocast_op("cross_entropy", &[input, target], |t| cross_entropy_with(&t[0], &t[1], o))?
    {
        return Ok(y);
    }
    let op = "cross_entropy";
    if input.ndim() == 0 {
        return Err(Error::shape(op, "input must have a class dim"));
    }
    let class_dim = if input.ndim() == 1 { 0 } else { 1 };
    let c = input.shape()[class_dim];
    let logp = input.log_softmax(class_dim as isize)?;
    let eps = o.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(op, format!("label_smoothing must be in [0, 1], got {eps}")));
    }
    if target.dtype().is_float() {
        if input.shape() != target.shape() {
            return Err(Error::dtype(
                op,
                format!(
                    "class indices must be an integer tensor (got {} of shape {:?}); a floating target \
                     holds class probabilities and needs the input's shape {:?}",
                    target.dtype(),
                    target.shape(),
                    input.shape()
                ),
            ));
        }
        let t = if eps > 0.0 { target.mul(1.0 - eps)?.add(eps / c as f64)? } else { target.clone() };
        let mut terms = logp.mul(&t)?;
        if let Some(w) = o.weight {
            let mut ws = vec![1isize; input.ndim()];
            ws[class_dim] = -1;
            terms = terms.mul(&w.to_dtype(logp.dtype())?.reshape(&ws)?)?;
        }
        let per = terms.sum_dim([class_dim as isize], false)?.neg()?;
        return match o.reduction {
            Reduction::Mean => per.mean(),
            r => reduce(op, per, r),
        };
    }
    let (nll, w_sel, ignored) = nll_parts(&logp, target, o.weight, o.ignore_index, op)?;
    let main = finish_class_loss(nll, &w_sel, target.shape(), o.reduction)?;
    if eps == 0.0 {
        return Ok(main);
    }
    let lp = classes_last(&logp)?;
    let smooth = match o.weight {
        Some(w) => lp.mul(&w.to_dtype(lp.dtype())?)?.sum_dim([1], false)?.neg()?,
        None => lp.sum_dim([1], false)?.neg()?,
    }
    .masked_fill(&ignored, 0.0)?;
    let smooth = match o.reduction {
        Reduction::None => per_sample_shape(smooth, target.shape())?,
        Reduction::Sum => smooth.sum()?,
        Reduction::Mean => match o.weight {
            Some(_) => smooth.sum()?.div(&w_sel.sum()?)?,
            None => smooth.sum()?.div(&ignored.logical_not()?.to_dtype(lp.dtype())?.sum()?)?,
        },
        Reduction::BatchMean => return Err(Error::invalid(op, "reduction 'batchmean' is only for kl_div")),
    };
    main.mul(1.0 - eps)?.add(&smooth.mul(eps / c as f64)?)
}

/// Binary cross-entropy of probabilities (logs clamped at −100, as PyTorch).
pub fn binary_cross_entropy_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    r: Reduction,
) -> Result<Tensor> {
    if let Some(y) = ember_autograd::autocast_op("binary_cross_entropy", &[input, target], |t| {
        binary_cross_entropy_with(&t[0], &t[1], weight, r)
    })? {
        return Ok(y);
    }
    same_shape("binary_cross_entropy", input, target)?;
    let log_p = input.log()?.clamp(Some(-100.0), None)?;
    let log_q = input.neg()?.add(1.0)?.log()?.clamp(Some(-100.0), None)?;
    let mut l = target.mul(&log_p)?.add(&target.neg()?.add(1.0)?.mul(&log_q)?)?.neg()?;
    if let Some(w) = weight {
        l = l.mul(w)?;
    }
    reduce("binary_cross_entropy", l, r)
}

/// Binary cross-entropy on logits, numerically stable, with `weight` and `pos_weight`.
pub fn binary_cross_entropy_with_logits_opts(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    pos_weight: Option<&Tensor>,
    r: Reduction,
) -> Result<Tensor> {
    if let Some(y) = ember_autograd::autocast_op("binary_cross_entropy_with_logits", &[input, target], |t| {
        binary_cross_entropy_with_logits_opts(&t[0], &t[1], weight, pos_weight, r)
    })? {
        return Ok(y);
    }
    same_shape("binary_cross_entropy_with_logits", input, target)?;
    // log(1 + e^{-x}) computed stably: max(-x, 0) + log(1 + e^{-|x|})
    let softplus_neg = input.neg()?.maximum(0.0)?.add(&input.abs()?.neg()?.exp()?.log1p()?)?;
    let one_minus_t = target.neg()?.add(1.0)?;
    let mut l = match pos_weight {
        Some(pw) => {
            let lw = pw.sub(1.0)?.mul(target)?.add(1.0)?;
            one_minus_t.mul(input)?.add(&lw.mul(&softplus_neg)?)?
        }
        None => one_minus_t.mul(input)?.add(&softplus_neg)?,
    };
    if let Some(w) = weight {
        l = l.mul(w)?;
    }
    reduce("binary_cross_entropy_with_logits", l, r)
}

/// Kullback–Leibler divergence with `input` as log-probabilities; `target` as probabilities, or
/// log-probabilities with `log_target`.
pub fn kl_div(input: &Tensor, target: &Tensor, r: Reduction, log_target: bool) -> Result<Tensor> {
    if let Some(y) = ember_autograd::autocast_op("kl_div", &[input, target], |t| kl_div(&t[0], &t[1], r, log_target))? {
        return Ok(y);
    }
    let l = if log_target {
        target.exp()?.mul(&target.sub(input)?)?
    } else {
        target.xlogy(target)?.sub(&target.mul(input)?)?
    };
    match r {
        Reduction::BatchMean => {
            let n = if input.ndim() == 0 { 1 } else { input.shape()[0] };
            l.sum()?.div(n as f64)
        }
        r => reduce("kl_div", l, r),
    }
}

/// Poisson negative log-likelihood.
pub fn poisson_nll_loss(
    input: &Tensor,
    target: &Tensor,
    log_input: bool,
    full: bool,
    eps: f64,
    r: Reduction,
) -> Result<Tensor> {
    let mut l = if log_input {
        input.exp()?.sub(&target.mul(input)?)?
    } else {
        input.sub(&target.mul(&input.add(eps)?.log()?)?)?
    };
    if full {
        let t = target.detach();
        let stirling = t.mul(&t.log()?)?.sub(&t)?.add(&t.mul(2.0 * std::f64::consts::PI)?.log()?.mul(0.5)?)?;
        let stirling = Tensor::where_cond(&t.gt(1.0)?, &stirling, 0.0)?;
        l = l.add(&stirling)?;
    }
    reduce("poisson_nll_loss", l, r)
}

/// Gaussian negative log-likelihood with predicted variances (clamped below at `eps` without
/// affecting the gradient, as PyTorch).
pub fn gaussian_nll_loss(
    input: &Tensor,
    target: &Tensor,
    var: &Tensor,
    full: bool,
    eps: f64,
    r: Reduction,
) -> Result<Tensor> {
    let op = "gaussian_nll_loss";
    let var = if var.shape() != input.shape() {
        if var.ndim() + 1 == input.ndim() && var.shape() == &input.shape()[..input.ndim() - 1] {
            var.unsqueeze(-1)?
        } else if var.ndim() == input.ndim() && var.shape().last() == Some(&1) {
            var.clone()
        } else {
            return Err(Error::shape(op, format!("var {:?} does not fit input {:?}", var.shape(), input.shape())));
        }
    } else {
        var.clone()
    };
    if var.detach().lt(0.0)?.any()?.item()? != 0.0 {
        return Err(Error::invalid(op, "var has negative entries"));
    }
    let vd = var.detach();
    let var = var.add(&vd.clamp(Some(eps), None)?.sub(&vd)?)?;
    let d = input.sub(target)?;
    let mut l = var.log()?.add(&d.mul(&d)?.div(&var)?)?.mul(0.5)?;
    if full {
        l = l.add(0.5 * (2.0 * std::f64::consts::PI).ln())?;
    }
    reduce(op, l, r)
}

/// `max(0, −y·(x1 − x2) + margin)`.
pub fn margin_ranking_loss(x1: &Tensor, x2: &Tensor, y: &Tensor, margin: f64, r: Reduction) -> Result<Tensor> {
    let l = y.neg()?.mul(&x1.sub(x2)?)?.add(margin)?.clamp(Some(0.0), None)?;
    reduce("margin_ranking_loss", l, r)
}

/// `x` where y = 1, `max(0, margin − x)` where y = −1.
pub fn hinge_embedding_loss(x: &Tensor, y: &Tensor, margin: f64, r: Reduction) -> Result<Tensor> {
    let m = x.neg()?.add(margin)?.clamp(Some(0.0), None)?;
    let out_m = Tensor::where_cond(&y.ne(1.0)?, &m, 0.0)?;
    let out_x = Tensor::where_cond(&y.ne(-1.0)?, x, 0.0)?;
    reduce("hinge_embedding_loss", out_m.add(&out_x)?, r)
}

/// `log(1 + e^{−y·x})`.
pub fn soft_margin_loss(x: &Tensor, y: &Tensor, r: Reduction) -> Result<Tensor> {
    let l = y.neg()?.mul(x)?.exp()?.log1p()?;
    reduce("soft_margin_loss", l, r)
}

/// Multi-label one-versus-all loss on logits `[N, C]` with 0/1 targets, averaged over classes.
pub fn multilabel_soft_margin_loss(x: &Tensor, y: &Tensor, weight: Option<&Tensor>, r: Reduction) -> Result<Tensor> {
    let mut l = y.mul(&x.logsigmoid()?)?.add(&y.neg()?.add(1.0)?.mul(&x.neg()?.logsigmoid()?)?)?.neg()?;
    if let Some(w) = weight {
        l = l.mul(w)?;
    }
    let per = l.mean_dim([-1], false)?;
    reduce("multilabel_soft_margin_loss", per, r)
}

/// Multi-class hinge loss on `[N, C]` scores: Σ_{i≠y} max(0, margin − x_y + x_i)^p · w_y / C.
pub fn multi_margin_loss(
    x: &Tensor,
    y: &Tensor,
    p: i64,
    margin: f64,
    weight: Option<&Tensor>,
    r: Reduction,
) -> Result<Tensor> {
    let op = "multi_margin_loss";
    if p != 1 && p != 2 {
        return Err(Error::invalid(op, format!("only p = 1 or 2 are supported, got {p}")));
    }
    let x2 = if x.ndim() == 1 { x.unsqueeze(0)? } else { x.clone() };
    let c = x2.shape()[1];
    let yi = y.reshape([-1, 1])?;
    let xy = x2.gather(1, &yi)?;
    let mut h = x2.sub(&xy)?.add(margin)?.clamp(Some(0.0), None)?;
    if p == 2 {
        h = h.mul(&h)?;
    }
    if let Some(w) = weight {
        h = h.mul(&w.index_select(0, &yi.reshape([-1])?)?.unsqueeze(1)?)?;
    }
    let not_y = yi.one_hot(c as i64)?.reshape([-1, c as isize])?.eq(0.0)?.to_dtype(h.dtype())?;
    let per = h.mul(&not_y)?.sum_dim([1], false)?.div(c as f64)?;
    let per = if x.ndim() == 1 { per.squeeze_dim(0)? } else { per };
    reduce(op, per, r)
}

/// `1 − cos(x1, x2)` where y = 1, `max(0, cos − margin)` where y = −1 (cosine along dim 1).
pub fn cosine_embedding_loss(x1: &Tensor, x2: &Tensor, y: &Tensor, margin: f64, r: Reduction) -> Result<Tensor> {
    const EPS: f64 = 1e-12;
    let d = x1.ndim() as isize - 1;
    let prod = x1.mul(x2)?.sum_dim([d], false)?;
    let m1 = x1.mul(x1)?.sum_dim([d], false)?.add(EPS)?;
    let m2 = x2.mul(x2)?.sum_dim([d], false)?.add(EPS)?;
    let cos = prod.div(&m1.mul(&m2)?.sqrt()?)?;
    let pos = cos.neg()?.add(1.0)?;
    let neg = cos.sub(margin)?.clamp(Some(0.0), None)?;
    let l = Tensor::where_cond(&y.eq(1.0)?, &pos, 0.0)?.add(&Tensor::where_cond(&y.eq(-1.0)?, &neg, 0.0)?)?;
    reduce("cosine_embedding_loss", l, r)
}

#[allow(clippy::too_many_arguments)]
/// `max(d(a, p) − d(a, n) + margin, 0)` with p-norm distances (optionally the distance swap).
pub fn triplet_margin_loss(
    anchor: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    margin: f64,
    p: f64,
    eps: f64,
    swap: bool,
    r: Reduction,
) -> Result<Tensor> {
    let d_ap = anchor.pairwise_distance(positive, p, eps, false)?;
    let mut d_an = anchor.pairwise_distance(negative, p, eps, false)?;
    if swap {
        let d_pn = positive.pairwise_distance(negative, p, eps, false)?;
        d_an = d_an.minimum(&d_pn)?;
    }
    reduce("triplet_margin_loss", d_ap.sub(&d_an)?.add(margin)?.clamp(Some(0.0), None)?, r)
}
