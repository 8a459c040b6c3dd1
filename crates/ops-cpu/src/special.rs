//! Special functions `libm` lacks: the inverse error function and the digamma function.

/// Inverse error function (Giles' single-precision approximation refined by two Newton steps in f64).
pub fn erfinv(y: f64) -> f64 {
    if y.is_nan() || !(-1.0..=1.0).contains(&y) {
        return f64::NAN;
    }
    if y == 1.0 {
        return f64::INFINITY;
    }
    if y == -1.0 {
        return f64::NEG_INFINITY;
    }
    let w = -((1.0 - y) * (1.0 + y)).ln();
    let mut x = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p * y
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p * y
    };
    // Newton on erf(x) - y = 0.
    for _ in 0..2 {
        let err = libm::erf(x) - y;
        x -= err / (2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp());
    }
    x
}

/// Digamma ψ(x) = d/dx ln Γ(x): reflection for x < 0.5, recurrence up to 10, then the asymptotic series.
pub fn digamma(mut x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return f64::NAN;
    }
    if x == 0.0 {
        // PyTorch: -inf at +0, +inf at -0 ... it returns -inf for 0 (matching SciPy's sign convention of lim).
        return if x.is_sign_negative() { f64::INFINITY } else { f64::NEG_INFINITY };
    }
    if x < 0.0 && x == x.floor() {
        return f64::NAN;
    }
    let mut result = 0.0;
    if x < 0.5 {
        // ψ(1-x) - ψ(x) = π cot(πx)
        result -= std::f64::consts::PI / (std::f64::consts::PI * x).tan();
        x = 1.0 - x;
    }
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series =
        inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 * (1.0 / 132.0)))));
    result + x.ln() - 0.5 * inv - series
}

/// Trigamma ψ₁(x) = d/dx ψ(x): reflection for x < 0.5, recurrence up to 10, then the asymptotic series.
/// Poles (0, -1, -2, ...) give +inf, as PyTorch's `polygamma(1, x)`.
pub fn trigamma(mut x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return f64::NAN;
    }
    if x <= 0.0 && x == x.floor() {
        return f64::INFINITY;
    }
    let mut result = 0.0;
    let mut sign = 1.0;
    if x < 0.5 {
        // ψ₁(1-x) + ψ₁(x) = π² / sin²(πx)
        let s = (std::f64::consts::PI * x).sin();
        result = std::f64::consts::PI * std::f64::consts::PI / (s * s);
        sign = -1.0;
        x = 1.0 - x;
    }
    let mut acc = 0.0;
    while x < 10.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv
        + inv2 / 2.0
        + inv
            * inv2
            * (1.0 / 6.0 - inv2 * (1.0 / 30.0 - inv2 * (1.0 / 42.0 - inv2 * (1.0 / 30.0 - inv2 * (5.0 / 66.0)))));
    result + sign * (acc + series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfinv_inverts_erf() {
        for &y in &[-0.999, -0.5, -0.1, 0.0, 0.3, 0.9, 0.99999] {
            assert!((libm::erf(erfinv(y)) - y).abs() < 1e-12, "{y}");
        }
        assert!(erfinv(2.0).is_nan());
    }

    #[test]
    fn digamma_known_values() {
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-12);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-12);
        assert!((digamma(-0.5) - (digamma(0.5) + 2.0)).abs() < 1e-10);
        assert!(digamma(-2.0).is_nan());
    }

    #[test]
    fn trigamma_known_values_and_derivative_of_digamma() {
        let pi2 = std::f64::consts::PI.powi(2);
        assert!((trigamma(1.0) - pi2 / 6.0).abs() < 1e-13);
        assert!((trigamma(0.5) - pi2 / 2.0).abs() < 1e-12);
        assert!(trigamma(0.0).is_infinite() && trigamma(-3.0).is_infinite());
        for &x in &[-2.7, -0.3, 0.1, 0.7, 3.3, 25.0] {
            let h = 1e-5;
            let fd = (digamma(x + h) - digamma(x - h)) / (2.0 * h);
            assert!((trigamma(x) - fd).abs() < 1e-5 * fd.abs().max(1.0), "{x}: {} vs {fd}", trigamma(x));
        }
    }
}
