//! The integration test binary: one binary, one module per topic (see README "Tests").

mod codec;
mod golden;
mod lifecycle;
mod powerloss;
mod projection;
mod projection_model;
mod recovery;
mod support;
