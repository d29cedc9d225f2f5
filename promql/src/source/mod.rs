//! Sample sources behind a network. They materialise a query's [`crate::eval::Plan`]
//! into a [`crate::storage::MemoryStore`]; evaluation then runs locally, so every
//! source gives the same semantics.

#[cfg(feature = "http")]
pub mod prometheus;
#[cfg(feature = "scrape")]
pub mod scrape;
