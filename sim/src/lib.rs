//! shoal's drivers and models.

pub mod engine;
pub mod net;
pub mod scenario;
