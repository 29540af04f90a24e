//! Fault injection for tests: arm a named point, and the next write that passes it fails
//! there, after some of its statements ran and before it commits. This is how the tests
//! prove that no write is ever half done.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::StoreError;

/// The points a write passes, in order, for each command.
pub const POINTS: &[&str] = &[
    "customer.after_insert",
    "deposit.after_postings",
    "withdrawal.after_reserve",
    "withdrawal.after_insert",
    "withdrawal.after_context",
    "withdrawal.after_initiation",
    "withdrawal.after_transition",
    "withdrawal.after_denial",
    "withdrawal.after_fee_reserve",
    "withdrawal.after_build",
    "withdrawal.after_signed",
    "withdrawal.after_conclude_entries",
    "audit.after_append",
];

#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<HashSet<&'static str>>,
}

impl Faults {
    /// Make the next pass through `point` fail. Unknown points are refused so a typo cannot
    /// make a test pass vacuously.
    pub fn arm(&self, point: &'static str) -> Result<(), StoreError> {
        if !POINTS.contains(&point) {
            return Err(StoreError::Corrupt(format!("unknown fault point {point}")));
        }
        if let Ok(mut armed) = self.armed.lock() {
            armed.insert(point);
        }
        Ok(())
    }

    /// Fail if `point` is armed (once).
    pub fn check(&self, point: &'static str) -> Result<(), StoreError> {
        let hit = self.armed.lock().map(|mut a| a.remove(point)).unwrap_or(false);
        if hit {
            Err(StoreError::InjectedFault(point))
        } else {
            Ok(())
        }
    }
}
