//! shoal's drivers and models.

pub mod driver;
pub mod engine;
pub mod gate;
pub mod net;
pub mod scenario;
