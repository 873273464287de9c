//! `demo-server`: see `lb_l7_demo::server` and docs/demo.md.

use anyhow::Context as _;
use clap::Parser as _;
use lb_l7_demo::init_logging as init;
use lb_l7_demo::server::{ServerArgs, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ServerArgs::parse();
    init(&lb_l7_demo::log_filter(&args.log));
    run(&args).await.context("demo-server")
}
