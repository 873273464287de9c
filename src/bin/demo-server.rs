//! `demo-server`: see `lb_l7_webhook::demo::server` and docs/demo.md.

use anyhow::Context as _;
use clap::Parser as _;
use lb_l7_webhook::demo::server::{ServerArgs, run};
use lb_l7_webhook::telemetry::{LogFormat, init};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ServerArgs::parse();
    init(LogFormat::Text, &lb_l7_webhook::demo::log_filter(&args.log));
    run(&args).await.context("demo-server")
}
