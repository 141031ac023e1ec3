//! Signals: the kernel's cumulative histograms as snapshots, their interval
//! deltas, and the feature vectors the model scores.

pub mod features;
pub mod histogram;
