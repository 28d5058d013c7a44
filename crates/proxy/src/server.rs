//! Listener manager and HTTP serving: binds one socket per snapshot
//! listener, serves HTTP/1.1 and h2c on each, routes every request, and
//! rebinds only listeners whose address changed after a reload.

use std::sync::Arc;

use tokio::sync::watch;

use crate::State;

/// Serves traffic until `shutdown` turns true, then drains for
/// `options.drain_timeout`. Fails when a listener cannot be bound at start
/// (the error names the port and the objects that asked for it).
pub async fn serve(state: Arc<State>, shutdown: watch::Receiver<bool>) -> Result<(), ServeError> {
    let _ = (state, shutdown);
    todo!("server::serve")
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address} (requested by {requested_by}): {message}")]
    Bind { address: String, requested_by: String, message: String },
}
