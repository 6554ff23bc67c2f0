//! `action-ledger tokens list|create|revoke`: a running server's token routes (admin), the
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
    /// List tokens (name, tenant, role, created); never their secrets (GET /api/v1/tokens).
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
            TokensCmd::Create { name, tenant, role } => {
                let body = json!({"name": name, "tenant": tenant, "role": role});
                let req = client
                    .request(Method::POST, client.url(&["api", "v1", "tokens"], &[]))
                    .header("content-type", "application/json")
                    .body(body.to_string());
                let ans = client.call(req, Duration::ZERO).await?;
                match printer.format {
                    OutputFormat::Json => printer.json(&ans),
                    OutputFormat::Table => {
                        eprintln!(
                            "created token {} (tenant {}, role {}); its secret is shown once:",
                            cell(&ans["name"]),
                            cell(&ans["tenant"]),
                            cell(&ans["role"])
                        );
                        printer.line(ans["token"].as_str().unwrap_or_default())
                    }
                }
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
