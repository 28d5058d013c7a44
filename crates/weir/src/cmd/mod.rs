pub mod analyze;
pub mod config;
pub mod demo;
pub mod explain;
pub mod proxy_config;
pub mod run;
pub mod validate;
