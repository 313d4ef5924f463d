//! shoal's drivers and models.
