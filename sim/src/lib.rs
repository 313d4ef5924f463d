//! shoal's drivers and models.

pub mod engine;
pub mod gate;
pub mod net;
pub mod scenario;
