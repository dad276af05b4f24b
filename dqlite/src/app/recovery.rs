//! Which member an offline recovery starts from: the one whose raft log is the most
//! up-to-date, because recovering a stale member silently drops committed entries (seen on
//! 1.11: 50 rows instead of 51). Pure.

use crate::node::LogPosition;

/// A member's log is behind another's, so recovering it would lose committed entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the log of this member ends at term {} index {}, behind another member's (term {} index {}): \
     recover from the most up-to-date member, or force it to accept losing entries",
    own.term, own.index, best.term, best.index
)]
pub struct BehindError {
    /// Where this member's log ends.
    pub own: LogPosition,
    /// Where the most up-to-date log ends.
    pub best: LogPosition,
}

/// The index of the most up-to-date log among `positions` (raft's order: term first, then
/// index), the first one on a tie; `None` when there is none.
pub fn most_up_to_date(positions: &[LogPosition]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, position) in positions.iter().enumerate() {
        if best.is_none_or(|b| *position > positions[b]) {
            best = Some(index);
        }
    }
    best
}

/// Checks that a member whose log ends at `own` may be recovered when the other members'
/// logs end at `others`: it must not be behind any of them, unless `force` says that losing
/// the entries it lacks is accepted.
pub fn check_recovery_source(
    own: LogPosition,
    others: &[LogPosition],
    force: bool,
) -> Result<(), BehindError> {
    match others.iter().max() {
        Some(best) if *best > own && !force => Err(BehindError { own, best: *best }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(term: u64, index: u64) -> LogPosition {
        LogPosition { term, index }
    }

    #[test]
    fn most_up_to_date_orders_by_term_then_index() {
        fn check(positions: &[LogPosition], expected: Option<usize>) {
            assert_eq!(most_up_to_date(positions), expected, "{positions:?}");
        }
        check(&[], None);
        check(&[at(1, 5)], Some(0));
        check(&[at(1, 5), at(1, 7), at(1, 6)], Some(1));
        // A higher term wins over a longer log: its entries are the committed ones.
        check(&[at(2, 3), at(1, 9)], Some(0));
        check(&[at(1, 9), at(3, 4), at(2, 20)], Some(1));
        // On a tie the first is chosen, so the choice is deterministic.
        check(&[at(2, 4), at(2, 4)], Some(0));
        check(&[at(0, 0), at(0, 0)], Some(0));
    }

    #[test]
    fn recovery_source_must_not_be_behind() {
        fn check(
            own: LogPosition,
            others: &[LogPosition],
            force: bool,
            expected: Result<(), BehindError>,
        ) {
            assert_eq!(
                check_recovery_source(own, others, force),
                expected,
                "{own:?} {others:?} {force}"
            );
        }
        check(at(1, 5), &[], false, Ok(()));
        check(at(1, 5), &[at(1, 5), at(1, 4)], false, Ok(()));
        check(at(2, 1), &[at(1, 9)], false, Ok(()));
        check(
            at(1, 5),
            &[at(1, 4), at(1, 6)],
            false,
            Err(BehindError {
                own: at(1, 5),
                best: at(1, 6),
            }),
        );
        check(
            at(1, 9),
            &[at(2, 1)],
            false,
            Err(BehindError {
                own: at(1, 9),
                best: at(2, 1),
            }),
        );
        // Forced: the operator accepts losing what the others have.
        check(at(1, 5), &[at(1, 6)], true, Ok(()));
    }
}
