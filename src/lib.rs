//! ksense: node-level eBPF exporter.
//!
//! The data flows through the modules in this order:
//! `probes` (BPF programs in the kernel, histograms read from their maps) ->
//! `signals` (histogram snapshots, interval deltas, feature vectors) ->
//! `model` (friction, direction, energy against a calibrated baseline) ->
//! `exporters` (Prometheus /metrics; OTLP push).

pub mod app;
pub mod bounded_read;
pub mod config;
pub mod exporters;
pub mod fileerr;
pub mod logging;
pub mod model;
pub mod privileges;
pub mod probes;
pub mod signals;
pub mod workloads;
