//! The MPC signer node (`strongroom-signer`) and the orchestrator client that drives a
//! group of them.
//!
//! Each node holds one share of every threshold key, sealed on its own disk
//! ([`vault`]), and talks to its peers and to orchestrators only over mutual TLS 1.3 with
//! pinned certificates ([`tls`]), in length-prefixed frames ([`wire`]). Before it joins
//! a signing session a node decodes the transaction itself and runs its own checks
//! ([`check`]), governance among them when the node pins a governance genesis
//! ([`governance`]); a refusal ends the session for everyone. No node, no orchestrator and no
//! database ever holds a whole key.
#![forbid(unsafe_code)]
// A `Refusal` carries its typed reason by value (about 140 bytes). Refusals are the cold path
// of a session, so the copy costs nothing that matters, while a boxed reason would make every
// match on one clumsier.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod check;
pub mod client;
pub mod cluster;
pub mod governance;
pub mod health;
pub mod journal;
pub mod mesh;
pub mod node;
pub mod nodelog;
pub mod provision;
pub mod tls;
pub mod vault;
pub mod wire;

pub use client::{NodeAddr, Orchestrator, Signed};
pub use node::{Config, Node, PeerConfig, Timeouts};
