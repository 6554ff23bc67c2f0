//! `action-ledger tokens list|create|rotate|revoke`: a running server's token routes (admin), the
//! remote twin of the offline `token` command on a data directory.

use super::client::Client;
use super::output::{cell, Printer};
use super::{OutputFormat, RemoteOpts};
use crate::cli::CliResult;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TokensArgs {
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(subcommand)]
    pub command: TokensCmd,
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// List tokens (name, tenant, role, created, expires, last used); never their secrets (GET /api/v1/tokens).
    List,
    /// Create a token (POST /api/v1/tokens). Table output: the secret alone on stdout
    /// (shown once); JSON output: the whole answer, secret included.
    Create {
        /// A unique name (1–64 of `A-Z a-z 0-9 - _ . @`); used by `revoke`.
        #[arg(long)]
        name: String,
        /// The tenant whose actions it reads (and writes).
        #[arg(long)]
        tenant: String,
        /// reader, writer or admin.
        #[arg(long)]
        role: String,
        /// Expire the token after this long: a number and s, m, h, d or w (30d), sent as
        /// `expires_at` from this machine's clock. Default: never.
        #[arg(long, value_name = "TTL")]
        ttl: Option<String>,
    },
    /// Give a token a new secret (POST /api/v1/tokens/{name}/rotate): the old secret stops
    /// working at once. Output as for `create`.
    Rotate {
        /// The token's name.
        name: String,
    },
    /// Revoke a token by name: it stops working at once (DELETE /api/v1/tokens/{name}).
    Revoke {
        /// The token's name.
        name: String,
    },
}

pub fn run(args: TokensArgs) -> CliResult {
    let client = Client::new(&args.remote)?;
    let printer = Printer::new(args.remote.format());
    super::block_on(async move {
        match args.command {
            TokensCmd::List => {
                let list = client.get(&["api", "v1", "tokens"], &[]).await?;
                let tokens = list.as_array().cloned().unwrap_or_default();
                match printer.format {
                    OutputFormat::Json => tokens.iter().try_for_each(|t| printer.json(t)),
                    OutputFormat::Table => {
                        // Columns the server sends beyond the four (an expiry, a last use)
                        // are shown too, in the order it sends them.
                        let mut header = vec!["name", "tenant", "role", "created_at"];
                        for t in &tokens {
                            for k in t.as_object().into_iter().flat_map(|m| m.keys()) {
                                if !header.contains(&k.as_str()) {
                                    header.push(k.as_str());
                                }
                            }
                        }
                        let rows: Vec<Vec<String>> = tokens
                            .iter()
                            .map(|t| header.iter().map(|k| cell(&t[*k])).collect())
                            .collect();
                        let upper: Vec<String> = header
                            .iter()
                            .map(|h| match *h {
                                "created_at" => "CREATED".to_string(),
                                other => other.to_uppercase(),
                            })
                            .collect();
                        let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
                        printer.table(&upper, &rows)
                    }
                }
            }
            TokensCmd::Create {
                name,
                tenant,
                role,
                ttl,
            } => {
                let mut body = json!({"name": name, "tenant": tenant, "role": role});
                if let Some(ttl) = ttl {
                    let secs = crate::tokens::parse_ttl(&ttl)
                        .map_err(|e| crate::cli::Failure::error(format!("--ttl {e}")))?;
                    body["expires_at"] = json!(crate::tokens::expiry_after(secs));
                }
                let req = client
                    .request(Method::POST, client.url(&["api", "v1", "tokens"], &[]))
                    .header("content-type", "application/json")
                    .body(body.to_string());
                let ans = client.call(req, Duration::ZERO).await?;
                show_secret(&printer, "created", &ans)
            }
            TokensCmd::Rotate { name } => {
                let url = client.url(&["api", "v1", "tokens", &name, "rotate"], &[]);
                let ans = client
                    .call(client.request(Method::POST, url), Duration::ZERO)
                    .await?;
                show_secret(&printer, "rotated", &ans)
            }
            TokensCmd::Revoke { name } => {
                let url = client.url(&["api", "v1", "tokens", &name], &[]);
                client
                    .call(client.request(Method::DELETE, url), Duration::ZERO)
                    .await?;
                match printer.format {
                    OutputFormat::Json => printer.json(&json!({"name": name, "revoked": true})),
                    OutputFormat::Table => printer.line(&format!("revoked {name}")),
                }
            }
        }
    })
}

/// The answer to a create or a rotate: in a table, the secret alone on stdout (what the
/// token is goes to stderr); in JSON, the whole answer.
fn show_secret(printer: &Printer, done: &str, ans: &serde_json::Value) -> CliResult {
    match printer.format {
        OutputFormat::Json => printer.json(ans),
        OutputFormat::Table => {
            let expires = match ans["expires_at"].as_str() {
                Some(at) => format!(", expires {at}"),
                None => String::new(),
            };
            eprintln!(
                "{done} token {} (tenant {}, role {}{expires}); its secret is shown once:",
                cell(&ans["name"]),
                cell(&ans["tenant"]),
                cell(&ans["role"])
            );
            printer.line(ans["token"].as_str().unwrap_or_default())
        }
    }
}
