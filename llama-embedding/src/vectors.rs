//! Vector arithmetic shared by the engine, the kernel probe and the tools that compare runs
//! (a leaf module: it imports nothing of the crate).

/// Matryoshka truncation to `dims` (when given), then L2 normalisation (when `l2`): the
/// order sentence-transformers applies `truncate_dim` and its Normalize module in.
pub fn finish(v: &mut Vec<f32>, dims: Option<usize>, l2: bool) {
    if let Some(d) = dims {
        v.truncate(d);
    }
    if l2 {
        l2_normalize(v);
    }
}

/// Scales `v` to unit length (left as is when it is all zeros).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// The mean of `rows` (each `dims` long), summed in f64 in order: the same bits for the same
/// rows in the same order (token pooling, document vectors).
pub fn mean(rows: &[&[f32]], dims: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dims];
    for r in rows {
        for (s, x) in sum.iter_mut().zip(r.iter()) {
            *s += f64::from(*x);
        }
    }
    let n = rows.len() as f64;
    sum.iter().map(|s| (s / n) as f32).collect()
}

/// Cosine similarity of two vectors of the same length.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}
