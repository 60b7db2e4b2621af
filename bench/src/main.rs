//! `raftbench`: an HTTP load generator for raftexample-compatible clusters (ours and etcd's
//! Go raftexample: `PUT /{key}` body = value answers 204, `GET /{key}` answers 200).
//!
//! ```text
//! raftbench --endpoints http://127.0.0.1:12380,http://127.0.0.1:22380 --mode put \
//!           --connections 64 --duration 10s
//! mode=put connections=64 elapsed=10.00s ok=... errors=0 req/s=... p50=...ms p90=...ms ...
//! raftbench --endpoints https://127.0.0.1:12380 --cacert ca.pem --cert client.pem \
//!           --key client-key.pem
//! ```
//!
//! # Layout
//! - `args.rs`: flags and their validation into a `Plan`.
//! - `endpoint.rs`: `http://host:port` and `https://host:port` endpoints.
//! - `tls.rs`: the TLS config of `--cacert`, `--cert`, `--key` for `https://` endpoints.
//! - `workload.rs`: modes, keys, values.
//! - `client.rs`: one keep-alive HTTP/1.1 connection (over TLS for `https://`) per
//!   closed-loop client.
//! - `run.rs`: preload, settle, timed run; all bounded in time.
//! - `verify.rs`: `--verify`: drain time and read-back of acknowledged writes.
//! - `report.rs`: counts, latency histogram, text and JSON output.
//!
//! # Invariants
//! - Every request is bounded by `--timeout`; the timed run starts no request after
//!   `--duration` or past `--requests`, so a run always ends.
//! - Latency percentiles cover successful (2xx) requests only; failures are counted by
//!   status code or by `timeout`, `connect`, `io`.

mod args;
mod client;
mod endpoint;
mod report;
mod run;
mod tls;
mod verify;
mod workload;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("raftbench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raftbench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run::run(plan)) {
        Ok(report) => {
            println!(
                "{}",
                if args.json {
                    report.json()
                } else {
                    report.line()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftbench: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests;
