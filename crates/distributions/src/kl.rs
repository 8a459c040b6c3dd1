//! `kl_divergence(p, q)` for the pairs of one family, in closed form.

use crate::beta::log_beta;
use crate::{
    Bernoulli, Beta, Categorical, Dirichlet, Distribution, Gamma, Independent, MultivariateNormal, Normal, Uniform,
};
use ember_autograd::{Error, Result, Tensor};

/// `KL(p ‖ q)`, of the batch shape: Normal, Bernoulli, Categorical, Uniform, Gamma, Beta,
/// Dirichlet, MultivariateNormal, and Independent wrappers of those with the same reinterpreted
/// dims. Other pairs are an error naming both families.
pub fn kl_divergence(p: &dyn Distribution, q: &dyn Distribution) -> Result<Tensor> {
    let (p, q) = (p.as_any(), q.as_any());
    if let (Some(p), Some(q)) = (p.downcast_ref::<Normal>(), q.downcast_ref::<Normal>()) {
        let var_ratio = p.scale.div(&q.scale)?.square()?;
        let t1 = ((&p.loc - &q.loc) / &q.scale).square()?;
        return Ok(0.5 * (&var_ratio + t1 - 1.0 - var_ratio.log()?));
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Bernoulli>(), q.downcast_ref::<Bernoulli>()) {
        let sp = |t: &Tensor| t.softplus(1.0, 20.0);
        let t1 = &p.probs * sp(&-&q.logits)?.sub(&sp(&-&p.logits)?)?;
        let t2 = (1.0 - &p.probs) * (sp(&q.logits)? - sp(&p.logits)?);
        return Ok(t1 + t2);
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Categorical>(), q.downcast_ref::<Categorical>()) {
        let t = &p.probs * p.logits.sub(&q.logits)?;
        // 0 · log 0 contributes nothing
        return t.masked_fill(&p.probs.eq(0)?, 0.0)?.sum_dim(-1, false);
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Uniform>(), q.downcast_ref::<Uniform>()) {
        let kl = (&q.high - &q.low).div(&(&p.high - &p.low))?.log()?;
        let outside = q.low.gt(&p.low)?.logical_or(&q.high.lt(&p.high)?)?;
        return kl.masked_fill(&outside, f64::INFINITY);
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Gamma>(), q.downcast_ref::<Gamma>()) {
        let t1 = &q.concentration * p.rate.div(&q.rate)?.log()?;
        let t2 = q.concentration.lgamma()? - p.concentration.lgamma()?;
        let t3 = (&p.concentration - &q.concentration) * p.concentration.digamma()?;
        let t4 = (&q.rate - &p.rate) * (&p.concentration / &p.rate);
        return Ok(t1 + t2 + t3 + t4);
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Beta>(), q.downcast_ref::<Beta>()) {
        let (pa, pb, qa, qb) = (&p.concentration1, &p.concentration0, &q.concentration1, &q.concentration0);
        ember_storage::shape::broadcast_shapes(pa.shape(), qa.shape(), "kl_divergence")?;
        let sp = pa + pb;
        let sq = qa + qb;
        return Ok(log_beta(qa, qb)? - log_beta(pa, pb)?
            + (pa - qa) * pa.digamma()?
            + (pb - qb) * pb.digamma()?
            + (&sq - &sp) * sp.digamma()?);
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Dirichlet>(), q.downcast_ref::<Dirichlet>()) {
        let (a, b) = (&p.concentration, &q.concentration);
        ember_storage::shape::broadcast_shapes(a.shape(), b.shape(), "kl_divergence")?;
        let sa = a.sum_dim(-1, false)?;
        let sb = b.sum_dim(-1, false)?;
        let t1 = sa.lgamma()? - sb.lgamma()?;
        let t2 = (a.lgamma()? - b.lgamma()?).sum_dim(-1, false)?;
        let t4 = a.digamma()? - sa.digamma()?.unsqueeze(-1)?;
        return Ok(t1 - t2 + ((a - b) * t4).sum_dim(-1, false)?);
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<MultivariateNormal>(), q.downcast_ref::<MultivariateNormal>()) {
        let k = p.loc.shape()[p.loc.ndim() - 1];
        // ‖Lq⁻¹ Lp‖²_F and ‖Lq⁻¹ (μq − μp)‖²
        let batch = ember_storage::shape::broadcast_shapes(&p.batch_shape(), &q.batch_shape(), "kl_divergence")?;
        let full = [&batch[..], &[k, k]].concat();
        let (lp, lq) =
            (p.scale_tril.broadcast_to(&full)?.contiguous()?, q.scale_tril.broadcast_to(&full)?.contiguous()?);
        let term2 = lq.linalg_solve(&lp)?.square()?.sum_dim([-2, -1], false)?;
        let term3 = q.whiten(&(&q.loc - &p.loc))?.square()?.sum_dim(-1, false)?;
        return Ok(q.half_log_det()? - p.half_log_det()? + 0.5 * (term2 + term3 - k as f64));
    }
    if let (Some(p), Some(q)) = (p.downcast_ref::<Independent>(), q.downcast_ref::<Independent>()) {
        if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims {
            return Err(Error::unsupported("kl_divergence", "Independent wrappers with different reinterpreted dims"));
        }
        return p.sum_rightmost(kl_divergence(p.base.as_ref(), q.base.as_ref())?);
    }
    Err(Error::unsupported("kl_divergence", "this pair of distributions (only pairs of one family are implemented)"))
}
