//! shoal's drivers and models.

pub mod net;
pub mod scenario;
