//! Quorum maths: pure functions over the voters' acknowledgements.

/// The largest value that a majority of `values` is at least as large as:
/// the `quorum`-th largest. Used for the commit index (values = match
/// indexes) and for confirmed read rounds.
///
/// `values` is small (one per voter) so sorting a copy is cheap.
pub(crate) fn majority_value(values: &mut [u64], quorum: usize) -> u64 {
    assert!(
        quorum >= 1 && quorum <= values.len(),
        "quorum {quorum} out of range for {} voters",
        values.len()
    );
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[quorum - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_value_is_the_quorum_th_largest() {
        assert_eq!(majority_value(&mut [5], 1), 5);
        assert_eq!(majority_value(&mut [1, 9, 4], 2), 4);
        assert_eq!(majority_value(&mut [7, 7, 0, 0, 3], 3), 3);
        assert_eq!(majority_value(&mut [2, 8, 8, 1], 3), 2);
    }
}
