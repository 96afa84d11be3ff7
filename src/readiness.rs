//! Whether the gateway can answer payments right now.
//!
//! Set by the reply consumer (positioned, and its last fetch succeeded) and read by
//! `/readyz` and the payment handler: without a working reply consumer a request would be
//! produced and then time out, so it is refused before anything is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
