//! The integration test binary: one binary, one module per topic (see README "Tests").

mod binserver;
mod cli;
mod clients;
mod codec;
mod crash;
mod damage;
mod dialect_do;
mod dialect_ecs;
mod dialect_nova;
mod dialect_redis;
mod diskfull;
mod edges;
mod fuzz;
mod golden;
mod http;
mod lifecycle;
mod limits;
mod powerloss;
mod projection;
mod projection_model;
mod recovery;
mod schemathesis;
mod security;
mod support;
