//! The harness for device state tests: a device driven by operations, snapshotted
//! through a snapshot format into a twin that must behave the same, and garbage made
//! from good states the way a hand-edited or corrupt snapshot file would hold it.

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A device as its state tests see it.
pub(crate) trait Restorable: Sized {
    /// What `state` returns and a restore takes.
    type State: Serialize + DeserializeOwned + PartialEq + Debug;
    /// Something the guest or the VMM does to the device.
    type Op;
    /// What an operation makes visible to the guest or the VMM.
    type Seen: PartialEq + Debug;

    /// The device's state.
    fn save(&self) -> Self::State;
    /// A fresh device, wired as this one is, restored to `state`.
    fn twin(&self, state: &Self::State) -> Result<Self, String>;
    /// Performs `op`, returning what it makes visible.
    fn apply(&mut self, op: &Self::Op) -> Self::Seen;

    /// Performs `ops` in turn.
    fn run(&mut self, ops: &[Self::Op]) -> Vec<Self::Seen> {
        ops.iter().map(|op| self.apply(op)).collect()
    }
}

/// What a run makes visible and the state it ends in.
pub(crate) type Outcome<D> = (Vec<<D as Restorable>::Seen>, <D as Restorable>::State);

/// Runs `prefix` on `device`, restores a twin from its state sent through JSON, runs
/// `tail` on both, and returns both outcomes: equal if the state holds all there is.
pub(crate) fn original_and_restored<D: Restorable>(
    mut device: D,
    prefix: &[D::Op],
    tail: &[D::Op],
) -> [Outcome<D>; 2] {
    device.run(prefix);
    let mut twin = device
        .twin(&through_json(&device.save()))
        .expect("a device's own state restores");
    [&mut device, &mut twin].map(|device| (device.run(tail), device.save()))
}

/// Runs `prefix` on `device`, writes `edits` over its state and restores a twin from
/// that: the restore must refuse it, or give a device that holds the state as given,
/// runs `tail` without a panic and ends in a state that restores again.
pub(crate) fn check_edited<D: Restorable>(
    mut device: D,
    prefix: &[D::Op],
    edits: &[Edit],
    tail: &[D::Op],
) -> Result<(), TestCaseError> {
    device.run(prefix);
    let Some(state) = edited(&device.save(), edits) else {
        return Ok(());
    };
    if let Ok(mut twin) = device.twin(&state) {
        prop_assert_eq!(twin.save(), state, "restored as given");
        twin.run(tail);
        let end = twin.save();
        prop_assert!(twin.twin(&end).is_ok(), "and stays valid: {:?}", end);
    }
    Ok(())
}

/// `state` after a trip through a snapshot format (JSON), as a restore would get it.
pub(crate) fn through_json<T: Serialize + DeserializeOwned>(state: &T) -> T {
    let text = serde_json::to_string(state).expect("device states serialize");
    serde_json::from_str(&text).expect("a serialized state deserializes")
}

/// A value written over one field of a serialized state.
#[derive(Debug, Clone)]
pub(crate) struct Edit {
    /// Which field (an index into the state's fields, wrapping).
    field: usize,
    /// The new value: a number, or what picks a flag or a name.
    value: u64,
    /// Write a value of another kind than the field holds (a number for a flag, say).
    retype: bool,
}

/// The states' enum variant names and one that is none, so an edit can swap a variant.
const NAMES: [&str; 8] = [
    "Ready", "Icw2", "Icw3", "Icw4", "Idle", "Loading", "Counting", "Bogus",
];

/// An edit: mostly a value the field's type takes (so the state still parses and its
/// restore must check it), sometimes a value of another kind.
pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    (
        any::<usize>(),
        prop_oneof![3 => 0..300u64, 1 => any::<u64>()],
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(field, value, retype)| Edit {
            field,
            value,
            retype,
        })
}

/// `state` with `edits` written over its fields, if the result still deserializes.
fn edited<T: Serialize + DeserializeOwned>(state: &T, edits: &[Edit]) -> Option<T> {
    let mut value = serde_json::to_value(state).expect("device states serialize");
    for edit in edits {
        let mut leaves = Vec::new();
        collect_leaves(&mut value, &mut leaves);
        let count = leaves.len();
        let Some(leaf) = leaves.into_iter().nth(edit.field % count.max(1)) else {
            break;
        };
        let name = NAMES[usize::try_from(edit.value % NAMES.len() as u64).unwrap_or(0)];
        *leaf = match (&*leaf, edit.retype) {
            (Value::Bool(_), false) => (edit.value % 2 == 1).into(),
            (Value::String(_), false) => name.into(),
            (Value::Number(_) | Value::Null, false) => edit.value.into(),
            (Value::Number(_), true) => name.into(),
            (_, true) if edit.value % 2 == 0 => Value::Null,
            _ => (-1).into(),
        };
    }
    serde_json::from_value(value).ok()
}

/// Every number, flag, string and null inside `value`.
fn collect_leaves<'a>(value: &'a mut Value, leaves: &mut Vec<&'a mut Value>) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| collect_leaves(item, leaves)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|field| collect_leaves(field, leaves)),
        leaf => leaves.push(leaf),
    }
}

/// The two property tests every device's state gets, over random operations from the
/// strategy `$op` on devices made by `$fresh`: a twin restored at a random point
/// behaves as the original through a random tail, and edited states are refused or run.
macro_rules! state_proptests {
    ($fresh:expr, $op:expr) => {
        proptest::proptest! {
            #[test]
            fn a_restored_device_behaves_as_the_original(
                prefix in proptest::collection::vec($op, 0..50),
                tail in proptest::collection::vec($op, 0..50),
            ) {
                let [original, restored] =
                    $crate::state_test::original_and_restored($fresh, &prefix, &tail);
                proptest::prop_assert_eq!(original, restored);
            }

            #[test]
            fn edited_states_are_refused_or_run(
                prefix in proptest::collection::vec($op, 0..40),
                edits in proptest::collection::vec($crate::state_test::edit(), 1..4),
                tail in proptest::collection::vec($op, 0..40),
            ) {
                $crate::state_test::check_edited($fresh, &prefix, &edits, &tail)?;
            }
        }
    };
}
pub(crate) use state_proptests;
