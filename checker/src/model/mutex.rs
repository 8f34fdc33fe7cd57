//! Knossos's mutex: `acquire` is legal when free and holds it; `release` is
//! legal when held and frees it. A `fail` did not happen.

use super::{Model, ModelError};
use crate::history::{Operation, Status};

/// A prepared mutex operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexOp {
    /// Take the lock.
    Acquire,
    /// Give it back.
    Release,
}

/// The mutex model; the state is "held".
#[derive(Clone, Debug, Default)]
pub struct Mutex;

impl Model for Mutex {
    type State = bool;
    type Op = MutexOp;

    fn name(&self) -> &'static str {
        "mutex"
    }

    fn init(&self) -> bool {
        false
    }

    fn prepare(&self, op: &Operation) -> Result<Option<MutexOp>, ModelError> {
        let prepared = match op.f.as_str() {
            "acquire" | "lock" => MutexOp::Acquire,
            "release" | "unlock" => MutexOp::Release,
            _ => return Err(ModelError::unknown_f(op, "mutex")),
        };
        Ok((op.status != Status::Fail).then_some(prepared))
    }

    fn step(&self, held: &bool, op: &MutexOp) -> Option<bool> {
        match op {
            MutexOp::Acquire => (!*held).then_some(true),
            MutexOp::Release => (*held).then_some(false),
        }
    }

    fn describe_state(&self, held: &bool) -> String {
        if *held { "held" } else { "free" }.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_twice_is_illegal() {
        let s = Mutex.step(&false, &MutexOp::Acquire).unwrap();
        assert_eq!(Mutex.step(&s, &MutexOp::Acquire), None);
        assert_eq!(Mutex.step(&s, &MutexOp::Release), Some(false));
        assert_eq!(Mutex.step(&false, &MutexOp::Release), None);
    }
}
