//! Query results: scalars, strings, instant vectors and matrices.

use crate::labels::Labels;

/// Milliseconds since the Unix epoch, as in Prometheus.
pub type Timestamp = i64;

/// The bit pattern Prometheus writes to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is a staleness marker (by bit pattern, not merely NaN).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A staleness marker.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// One float sample of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Sample time.
    pub t: Timestamp,
    /// Sample value.
    pub v: f64,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series.
    pub labels: Labels,
    /// The evaluation time (or the stored sample's time, where Prometheus keeps it).
    pub t: Timestamp,
    /// The value.
    pub v: f64,
}

/// One series of a range vector or range-query result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series.
    pub labels: Labels,
    /// Its points, in time order.
    pub points: Vec<Point>,
}

/// The value of an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A float, at the evaluation time.
    Scalar {
        /// Evaluation time.
        t: Timestamp,
        /// The value.
        v: f64,
    },
    /// A string.
    String {
        /// Evaluation time.
        t: Timestamp,
        /// The text.
        v: String,
    },
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector, or the result of a range query.
    Matrix(Vec<Series>),
}
