//! Calls the echo service through lodestar's balanced channel, with a
//! version pin and a colour lane, and prints who served each call.
//!
//! ```sh
//! cargo run --example client                   # version v1, base lane
//! cargo run --example client -- --color blue   # the blue lane (base when it is empty)
//! cargo run --example client -- --version v2 --count 10
//! ```
//!
//! The channel watches the registry, keeps one HTTP/2 connection per
//! instance and picks one per call; the route rides in request headers
//! (`RouteExt::set_route`). `LODESTAR_REGISTRY` picks the registry.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use lodestar::balance::Route;
use lodestar_echo::{EchoRequest, echo_client::EchoClient};
use lodestar_tonic::{Channel, RouteExt};

/// Flags of the example client.
#[derive(Debug, Parser)]
struct Args {
    /// The registry URL.
    #[arg(
        long,
        env = "LODESTAR_REGISTRY",
        default_value = "lodestar://127.0.0.1:7171"
    )]
    registry: String,
    /// The service to call.
    #[arg(long, env = "ECHO_SERVICE", default_value = "echo")]
    service: String,
    /// Call only instances of this version.
    #[arg(long, env = "ECHO_VERSION", default_value = "v1")]
    version: String,
    /// Call in this colour lane (none: the base lane).
    #[arg(long, env = "ECHO_COLOR")]
    color: Option<String>,
    /// How many calls to make.
    #[arg(long, default_value_t = 5)]
    count: u32,
    /// Pause between calls, in milliseconds.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let registry = lodestar_connect::connect(&args.registry).await?;
    let channel = Channel::builder(registry, &args.service).connect();
    let mut client = EchoClient::new(channel);

    let mut route = Route::new().with_version(&args.version);
    if let Some(color) = &args.color {
        route = route.with_color(color);
    }
    for call in 1..=args.count {
        let mut request = tonic::Request::new(EchoRequest {
            message: format!("hello {call}"),
            delay_ms: 0,
        });
        request.set_route(&route)?;
        let reply = client.say(request).await?.into_inner();
        // The echo names its instance, and the lane the request came in.
        let lane = if reply.color.is_empty() {
            "base"
        } else {
            &reply.color
        };
        println!(
            "call {call}: served by {}, version {} (request lane: {lane})",
            reply.instance, reply.version
        );
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    Ok(())
}
