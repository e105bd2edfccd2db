//! The class scores' sums: `sums[k] = sum_t x_t W[col_t][k]` over a text's distinct
//! in-vocabulary n-grams `t` (column `col_t`, value `x_t = tf * idf`), with the weights kept
//! as the graph's float32 values in a `D x stride` table (row `col` = the weights of column
//! `col` for every score row, zeros after the last; `stride = sums.len()`).
//!
//! Every class sum adds its terms in the order given, in float64, one multiply and one add
//! each (no fused multiply-add): the result does not depend on the instruction set. What
//! does is the speed. A many-label model spends most of a text's time here (about 100 terms
//! x 151 classes for a CLINC150 query), and a loop over the terms with the K sums in memory
//! loads and stores every sum once per term. So the classes are taken in blocks whose sums
//! stay in vector registers while every term adds to them; the block is as wide as the
//! instruction set found at run time allows (AVX-512: 64 sums, AVX2: 32, else 16), then
//! halves down to 8 for the rest, then one sum at a time. A narrow block is slower per
//! class (one chain of dependent adds), hence the table's rows padded to a multiple of 16.

/// `sums[k] = sum_t x_t * weights[col_t * sums.len() + k]` (in the order of `terms`; `sums`
/// is overwritten).
#[inline]
pub fn accumulate(sums: &mut [f64], weights: &[f32], terms: &[(u32, f64)]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the instructions the function is compiled for.
            return unsafe { accumulate_avx512(sums, weights, terms) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { accumulate_avx2(sums, weights, terms) };
        }
    }
    accumulate_with::<16>(sums, weights, terms);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_avx512(sums: &mut [f64], weights: &[f32], terms: &[(u32, f64)]) {
    accumulate_with::<64>(sums, weights, terms);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2(sums: &mut [f64], weights: &[f32], terms: &[(u32, f64)]) {
    accumulate_with::<32>(sums, weights, terms);
}

/// Blocks of `B` classes, then of 32, 16 and 8 (those narrower than `B`), then one class
/// at a time.
#[inline(always)]
fn accumulate_with<const B: usize>(sums: &mut [f64], weights: &[f32], terms: &[(u32, f64)]) {
    let mut start = blocks::<B>(sums, weights, terms, 0);
    if B > 32 {
        start = blocks::<32>(sums, weights, terms, start);
    }
    if B > 16 {
        start = blocks::<16>(sums, weights, terms, start);
    }
    start = blocks::<8>(sums, weights, terms, start);
    let rows = sums.len();
    for (k, s) in sums.iter_mut().enumerate().skip(start) {
        let mut acc = 0.0;
        for &(col, x) in terms {
            acc += x * weights[col as usize * rows + k] as f64;
        }
        *s = acc;
    }
}

/// The sums of the classes `start..` in blocks of `B` while a whole block fits; returns the
/// first class left.
#[inline(always)]
fn blocks<const B: usize>(sums: &mut [f64], weights: &[f32], terms: &[(u32, f64)], mut start: usize) -> usize {
    let rows = sums.len();
    while start + B <= rows {
        let mut acc = [0.0f64; B];
        for &(col, x) in terms {
            let at = col as usize * rows + start;
            let w: &[f32; B] = weights[at..at + B].try_into().expect("a block of B weights");
            for (a, &w) in acc.iter_mut().zip(w) {
                *a += x * w as f64;
            }
        }
        sums[start..start + B].copy_from_slice(&acc);
        start += B;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every class and every instruction set: the same sums, bit for bit, as the plain loop.
    #[test]
    fn the_blocks_add_in_the_plain_loops_order() {
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for rows in [1, 2, 7, 8, 9, 16, 31, 33, 60, 64, 65, 151, 200] {
            let d = 50;
            let weights: Vec<f32> = (0..d * rows).map(|_| next() as f32 * 3.0).collect();
            let terms: Vec<(u32, f64)> = (0..23).map(|i| ((i * 7 % d) as u32, next() * 10.0)).collect();
            let mut want = vec![0.0; rows];
            for &(col, x) in &terms {
                for (k, s) in want.iter_mut().enumerate() {
                    *s += x * weights[col as usize * rows + k] as f64;
                }
            }
            let mut got = vec![f64::NAN; rows];
            accumulate(&mut got, &weights, &terms);
            assert_eq!(got, want, "rows {rows}");
            let mut portable = vec![f64::NAN; rows];
            accumulate_with::<16>(&mut portable, &weights, &terms);
            assert_eq!(portable, want, "rows {rows}");
            let mut empty = vec![f64::NAN; rows];
            accumulate(&mut empty, &weights, &[]);
            assert!(empty.iter().all(|&s| s == 0.0));
        }
    }
}
