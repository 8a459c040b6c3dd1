//! Fallible allocation: a result that cannot fit in memory becomes an [`Error::OutOfMemory`] naming
//! the op and the bytes, never an abort of the process (Rust's infallible `Vec` allocation aborts).

use crate::{Error, Result};

/// Bytes for `n` elements of `elem_size` bytes, or an error when that overflows the address space.
pub fn bytes_for(op: &str, n: usize, elem_size: usize) -> Result<usize> {
    n.checked_mul(elem_size).filter(|&b| b <= isize::MAX as usize).ok_or_else(|| Error::out_of_memory(op, usize::MAX))
}

/// An empty vector with room for exactly `n` elements, or an error naming `op` and the bytes.
///
/// ```
/// use ember_storage::alloc::try_with_capacity;
/// assert_eq!(try_with_capacity::<f32>("zeros", 4).unwrap().capacity(), 4);
/// assert!(try_with_capacity::<f64>("zeros", usize::MAX / 4).is_err());
/// ```
pub fn try_with_capacity<T>(op: &str, n: usize) -> Result<Vec<T>> {
    let bytes = bytes_for(op, n, std::mem::size_of::<T>())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::out_of_memory(op, bytes))?;
    Ok(v)
}

/// A vector of `n` copies of `value`, allocated fallibly.
pub fn try_filled<T: Clone>(op: &str, n: usize, value: T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(op, n)?;
    v.resize(n, value);
    Ok(v)
}

/// A vector of `f(0), f(1), ... f(n - 1)`, allocated fallibly.
pub fn try_from_fn<T>(op: &str, n: usize, f: impl FnMut(usize) -> T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(op, n)?;
    v.extend((0..n).map(f));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors_naming_op_and_bytes() {
        let e = try_filled::<u64>("arange", 1 << 58, 0).unwrap_err();
        assert_eq!(e, Error::out_of_memory("arange", 1 << 61));
        assert!(e.to_string().contains("arange") && e.to_string().contains(&(1u64 << 61).to_string()));
        let e = try_filled::<u64>("eye", usize::MAX, 0).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        assert_eq!(try_from_fn("x", 3, |i| i * 2).unwrap(), vec![0, 2, 4]);
    }
}
