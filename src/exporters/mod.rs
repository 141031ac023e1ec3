//! Exporters: the family gatherer, its encoders for /metrics, and the OTLP
//! push.

pub mod explain;
pub mod families;
pub mod gather;
pub mod http;
pub mod landing;
pub mod negotiate;
pub mod openmetrics;
pub mod otlp;
pub mod prometheus_text;
pub mod webconfig;
