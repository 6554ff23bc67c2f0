//! The integration test binary: one binary, one module per topic (see README "Tests").

mod codec;
mod golden;
mod lifecycle;
mod powerloss;
mod recovery;
mod support;
