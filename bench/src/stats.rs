//! Welch's two-sample t-test, for the gate's verdict over seeds: is a metric's mean over N seeds
//! now different from its mean over the baseline's N seeds, given the spread between seeds?
//!
//! Welch's test rather than Student's pooled one: a change of protocol can change the spread as well
//! as the mean (a slower swarm has a wider tail). Rather than a paired test: a run with other seeds
//! (`--seed-offset`) has no pairing with the baseline's. The p-value comes from the Student t
//! distribution, through the regularized incomplete beta function (continued fraction, Lentz's
//! method; Numerical Recipes §6.4), with the Welch–Satterthwaite degrees of freedom.

/// Mean and sample standard deviation (n − 1); (mean, 0) for one value.
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Welch's t statistic, its degrees of freedom and the two-sided p-value for `a` and `b` (each at
/// least 2 values). With no spread on either side the means are exact: p is 0 if they differ, 1 if
/// they do not.
pub fn welch(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (ma, sa) = mean_sd(a);
    let (mb, sb) = mean_sd(b);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (sa * sa / na, sb * sb / nb);
    let se = (va + vb).sqrt();
    if se == 0.0 {
        return if ma == mb {
            (0.0, f64::INFINITY, 1.0)
        } else {
            (f64::INFINITY.copysign(mb - ma), f64::INFINITY, 0.0)
        };
    }
    let t = (mb - ma) / se;
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let p = incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    (t, df, p.clamp(0.0, 1.0))
}

/// The paired t-test on per-seed differences `b[i] − a[i]` (same seeds on both sides: common random
/// numbers, so seed-to-seed spread cancels): t, degrees of freedom, two-sided p. With no spread in
/// the differences the comparison is exact: p is 0 if they are not all 0, 1 if they are.
pub fn paired(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let (md, sd) = mean_sd(&d);
    let n = d.len() as f64;
    if sd == 0.0 {
        return if md == 0.0 { (0.0, n - 1.0, 1.0) } else { (f64::INFINITY.copysign(md), n - 1.0, 0.0) };
    }
    let t = md / (sd / n.sqrt());
    let df = n - 1.0;
    (t, df, incomplete_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0))
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from SciPy 1.x, `scipy.stats.ttest_ind(b, a, equal_var=False)`.
    #[test]
    fn welch_matches_scipy() {
        for (a, b, t, p) in REFERENCE {
            let (tt, _, pp) = welch(a, b);
            assert!((tt - t).abs() < 1e-9, "t {tt} vs {t}");
            assert!((pp - p).abs() < 1e-9, "p {pp} vs {p}");
        }
    }

    /// SciPy's `ttest_rel(b, a)` on the first reference case.
    #[test]
    fn paired_matches_scipy() {
        let (t, _, p) = paired(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 6.0, 8.0, 10.0]);
        assert!((t - PAIRED_T).abs() < 1e-9 && (p - PAIRED_P).abs() < 1e-9, "{t} {p}");
        assert_eq!(paired(&[1.0, 2.0], &[1.0, 2.0]).2, 1.0);
        assert_eq!(paired(&[1.0, 2.0], &[2.0, 3.0]).2, 0.0);
    }

    #[test]
    fn no_spread_means_exact_comparison() {
        assert_eq!(welch(&[2.0, 2.0], &[2.0, 2.0]).2, 1.0);
        assert_eq!(welch(&[2.0, 2.0], &[3.0, 3.0]).2, 0.0);
    }

    #[test]
    fn ln_gamma_of_integers_is_ln_factorial() {
        for (n, f) in [(1.0, 1.0f64), (2.0, 1.0), (5.0, 24.0), (10.0, 362_880.0)] {
            assert!((ln_gamma(n) - f.ln()).abs() < 1e-12, "{n}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    const PAIRED_T: f64 = 4.242640687119285;
    const PAIRED_P: f64 = 0.01323559956368269;

    type Case = (&'static [f64], &'static [f64], f64, f64);
    const REFERENCE: &[Case] = &[
        (&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 6.0, 8.0, 10.0], 1.8973665961010275, 0.10753119493062728),
        (
            &[10.19, 10.2, 10.15, 10.2, 10.23],
            &[10.19, 10.15, 10.18, 10.18, 10.16],
            -1.4832396974190392,
            0.18583657815939217,
        ),
        (
            &[15.1, 18.8, 18.2, 16.0, 17.5, 14.9],
            &[20.5, 16.0, 20.7, 19.1],
            1.8211969352258113,
            0.12509594667152416,
        ),
        (&[1.0, 1.1, 0.9], &[5.0, 5.2, 4.9], 38.2635596880374, 1.1739206749972867e-05),
    ];
}
