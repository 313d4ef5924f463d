//! Protocol tests: nodes driven through an in-memory network with explicit time.

mod bittorrent;
mod dragonfly;
mod harness;
mod rules;
mod swarm;
