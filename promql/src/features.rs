//! Feature gates, named after Prometheus' `--enable-feature=` flags.

use std::fmt;

/// One feature flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// `promql-experimental-functions`: experimental functions and `limitk`/`limit_ratio`.
    ExperimentalFunctions,
    /// `promql-duration-expr`: arithmetic, `step()`, `range()`, `min_of`/`max_of` in durations.
    DurationExpr,
    /// `promql-extended-range-selectors`: `anchored` and `smoothed`.
    ExtendedRangeSelectors,
    /// `promql-binop-fill-modifiers`: `fill`, `fill_left`, `fill_right`.
    BinopFillModifiers,
    /// `promql-delayed-name-removal`: drop `__name__` at the end of evaluation.
    DelayedNameRemoval,
}

impl Feature {
    /// Every feature this crate knows.
    pub const ALL: [Feature; 5] = [
        Feature::ExperimentalFunctions,
        Feature::DurationExpr,
        Feature::ExtendedRangeSelectors,
        Feature::BinopFillModifiers,
        Feature::DelayedNameRemoval,
    ];

    /// The `--enable-feature` name.
    pub fn flag(self) -> &'static str {
        match self {
            Feature::ExperimentalFunctions => "promql-experimental-functions",
            Feature::DurationExpr => "promql-duration-expr",
            Feature::ExtendedRangeSelectors => "promql-extended-range-selectors",
            Feature::BinopFillModifiers => "promql-binop-fill-modifiers",
            Feature::DelayedNameRemoval => "promql-delayed-name-removal",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.flag())
    }
}

/// Flags Prometheus still accepts although the behaviour is always on.
const ALWAYS_ON: [&str; 3] =
    ["promql-at-modifier", "promql-negative-offset", "new-service-discovery-manager"];

/// An unknown name in an `--enable-feature` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown feature {name:?} (known: {known})")]
pub struct UnknownFeature {
    /// The name given.
    pub name: String,
    known: String,
}

/// A set of enabled features. The default enables none, like a Prometheus server
/// started without `--enable-feature`.
///
/// ```
/// use promql::{Feature, Features};
/// let f = Features::from_flags("promql-experimental-functions,promql-duration-expr").unwrap();
/// assert!(f.is_enabled(Feature::DurationExpr));
/// assert!(!f.is_enabled(Feature::BinopFillModifiers));
/// assert!(Features::from_flags("promql-time-travel").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    bits: u8,
}

impl Features {
    /// No feature enabled.
    pub const fn none() -> Self {
        Features { bits: 0 }
    }

    /// Every feature enabled: what Prometheus' promqltest engine turns on.
    pub fn all() -> Self {
        Feature::ALL.into_iter().fold(Features::none(), Features::with)
    }

    /// The set plus `f`.
    pub fn with(self, f: Feature) -> Self {
        Features { bits: self.bits | Self::bit(f) }
    }

    /// Whether `f` is on.
    pub fn is_enabled(self, f: Feature) -> bool {
        self.bits & Self::bit(f) != 0
    }

    fn bit(f: Feature) -> u8 {
        1 << Feature::ALL.iter().position(|&x| x == f).unwrap_or(0)
    }

    /// Parses a comma-separated `--enable-feature` value. Names of features that are
    /// always on in Prometheus 3 (`promql-at-modifier`, …) are accepted and change nothing.
    pub fn from_flags(list: &str) -> Result<Self, UnknownFeature> {
        let mut features = Features::none();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(f) = Feature::ALL.into_iter().find(|f| f.flag() == name) {
                features = features.with(f);
            } else if !ALWAYS_ON.contains(&name) {
                let known = Feature::ALL.map(Feature::flag).join(", ");
                return Err(UnknownFeature { name: name.to_owned(), known });
            }
        }
        Ok(features)
    }
}
