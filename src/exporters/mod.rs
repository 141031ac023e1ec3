//! Exporters: the metric families (one definition) and their encoders.

pub mod families;
pub mod http;
pub mod negotiate;
pub mod openmetrics;
pub mod prometheus_text;
pub mod webconfig;
