//! Strategies shared by the property-test suites.

use proptest::prelude::*;

/// Shapes that broadcast together: `b` drops leading dims and sets some dims to 1.
pub fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (proptest::collection::vec(1..4usize, 1..4), any::<u8>(), 0..2usize).prop_map(|(a, mask, drop)| {
        let b: Vec<usize> = a
            .iter()
            .enumerate()
            .skip(drop.min(a.len() - 1))
            .map(|(i, &s)| if mask >> i & 1 == 1 { 1 } else { s })
            .collect();
        (a, b)
    })
}
