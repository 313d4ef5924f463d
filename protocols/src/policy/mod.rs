//! Distribution policies other than Kraken's, built on the same agent, origin and tracker nodes
//! (`protocol.policy` in a scenario, [`crate::config::Policy`]).
//!
//! Each policy keeps its logic here and reaches the nodes through small hooks, so every engine
//! (discrete-event, turmoil, real sockets) runs it unchanged.

pub mod dragonfly;
