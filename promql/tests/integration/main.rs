//! The `promql` crate's integration tests, one binary:
//! - `conformance`: every promqltest script against the engine, with a baseline;
//! - `corpus`: every query of Prometheus' promqltest files parses;
//! - `rejects`: inputs Prometheus refuses, with message and position;
//! - `roundtrip`: `parse(print(e)) == e` for generated trees and for the corpus;
//! - `nesting`: hostile depth gives an error, never a stack overflow;
//! - `steps`: range queries of generated queries equal their instant queries;
//! - `prometheus` (feature `http`): local evaluation over samples fetched from a real
//!   Prometheus equals its own answers, for the Istio queries and for generated ones;
//! - `scrape` (feature `scrape`): scraping a test server and Prometheus' own `/metrics`.

// Tests fail loudly: unwrapping is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod corpus;
mod nesting;
#[cfg(feature = "http")]
mod prometheus;
mod rejects;
mod roundtrip;
#[cfg(feature = "scrape")]
mod scrape;
mod steps;
