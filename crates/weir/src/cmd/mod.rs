pub mod analyze;
pub mod config;
pub mod explain;
pub mod proxy_config;
pub mod validate;
