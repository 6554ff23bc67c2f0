//! The integration test binary: one binary, one module per topic (see README "Tests").

mod clients;
mod codec;
mod dialect_ecs;
mod fuzz;
mod golden;
mod http;
mod lifecycle;
mod powerloss;
mod projection;
mod projection_model;
mod recovery;
mod schemathesis;
mod security;
mod support;
