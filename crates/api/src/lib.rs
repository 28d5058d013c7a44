//! weir's API layer: the Istio networking resources users write, how they
//! are read from files (with the line of every field), and Istio's
//! validation rules with Istio's messages.

pub mod check;
pub mod load;
pub mod protocol;
pub mod types;
pub mod validate;

pub use load::{DecodeProblem, DocumentError, LoadError, LoadOptions, Loaded, decode_document, load_paths, load_str};
pub use types::{IstioObject, Kind, Spec};
pub use validate::{Finding, Report, Severity, validate};
