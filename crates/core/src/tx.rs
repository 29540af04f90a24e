//! Why a chain decoder refuses a transaction's shape, typed.
//!
//! A decoder (the signer nodes', the engine's, the offline signer's) reads a transaction back
//! into the one movement it makes and refuses anything else. Where the refusal is about the
//! transaction's parts rather than a field the intent names (those are `Mismatch`es), it is
//! one of these, so a node's "no" carries which input or output and why, and the engine and
//! the API can show it without parsing text. Inputs and outputs are counted from 0.

use serde::{Deserialize, Serialize};
use strongroom_units::Amount;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxRefusal {
    /// An input spends a coin the signing key does not control (by the script the node
    /// derives from its own key, not by anything the transaction says).
    #[error("input {input} spends {spent}, which is not the signing key's own coin")]
    ForeignInput { input: u32, spent: String },
    /// An input comes without the whole transaction it spends, so its amount and script
    /// cannot be checked (a segwit v0 signature commits to its own input's amount only).
    #[error("input {input} comes without the transaction it spends")]
    MissingPrevious { input: u32 },
    /// The previous transaction given is not the one the input spends (another id, no such
    /// output), or the amount or script stated for the input is not that transaction's: a
    /// lying amount hides a fee.
    #[error("input {input}: {detail}")]
    PreviousMismatch { input: u32, detail: String },
    /// An input asks for a signature hash type other than the default (one that lets others
    /// change outputs or add inputs after signing).
    #[error("input {input} asks for signature hash type {sighash:#x}; only the default is signed")]
    Sighash { input: u32, sighash: u32 },
    /// An output the intent cannot name: a second outside payment, change to a script that
    /// is not the signing key's own, or a script with no address.
    #[error("output {output} pays {amount} base units to {to}, which the intent does not name")]
    UnnamedOutput { output: u32, to: String, amount: Amount },
    /// The outputs spend more than the inputs hold.
    #[error("the outputs spend {outputs} but the inputs hold {inputs}")]
    OutputsExceedInputs { inputs: Amount, outputs: Amount },
    /// A field a plain transfer never sets (a time lock, an unknown version, a finalized
    /// or pre-signed input, a key or script for another spend).
    #[error("{field} is set: a plain transfer does not set it")]
    UnexpectedField { field: String },
}

impl TxRefusal {
    /// Every `problem`, in declaration order (kept in step with ADR 0010 by a test).
    pub const CODES: &'static [&'static str] = &[
        "foreign_input",
        "missing_previous",
        "previous_mismatch",
        "sighash",
        "unnamed_output",
        "outputs_exceed_inputs",
        "unexpected_field",
    ];

    /// This refusal's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            TxRefusal::ForeignInput { .. } => "foreign_input",
            TxRefusal::MissingPrevious { .. } => "missing_previous",
            TxRefusal::PreviousMismatch { .. } => "previous_mismatch",
            TxRefusal::Sighash { .. } => "sighash",
            TxRefusal::UnnamedOutput { .. } => "unnamed_output",
            TxRefusal::OutputsExceedInputs { .. } => "outputs_exceed_inputs",
            TxRefusal::UnexpectedField { .. } => "unexpected_field",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn codes_are_the_serialized_problem_and_in_order() {
        let all = [
            TxRefusal::ForeignInput { input: 0, spent: "x".into() },
            TxRefusal::MissingPrevious { input: 0 },
            TxRefusal::PreviousMismatch { input: 0, detail: "x".into() },
            TxRefusal::Sighash { input: 0, sighash: 2 },
            TxRefusal::UnnamedOutput { output: 1, to: "x".into(), amount: Amount::MAX },
            TxRefusal::OutputsExceedInputs { inputs: Amount::ZERO, outputs: Amount::MAX },
            TxRefusal::UnexpectedField { field: "x".into() },
        ];
        let codes: Vec<&str> = all.iter().map(TxRefusal::code).collect();
        assert_eq!(codes, TxRefusal::CODES);
        for r in &all {
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json["problem"], r.code());
            assert_eq!(&serde_json::from_value::<TxRefusal>(json).unwrap(), r);
            // Inside another internally tagged enum (a node's refusal), from text: serde
            // buffers the fields, and a u128 does not survive that buffer.
            let text = format!(r#"{{"outer":{}}}"#, serde_json::to_string(r).unwrap());
            #[derive(Deserialize)]
            #[serde(tag = "code")]
            enum Outer {
                #[serde(rename = "x")]
                X { refusal: TxRefusal },
            }
            let text = text.replace(r#"{"outer":"#, r#"{"code":"x","refusal":"#);
            let Outer::X { refusal } = serde_json::from_str::<Outer>(&text).unwrap();
            assert_eq!(&refusal, r);
        }
    }
}
