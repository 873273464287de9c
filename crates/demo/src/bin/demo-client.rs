//! `demo-client`: see `lb_l7_demo::client` and docs/demo.md. Exit status: see `demo-client --help`.

use std::process::ExitCode;

use clap::Parser as _;
use lb_l7_demo::client::{ClientArgs, EXIT_NO_DATA, live_view_wanted, run};
use lb_l7_demo::init_logging as init;
use lb_l7_demo::report::Output;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ClientArgs::parse();
    init(&lb_l7_demo::log_filter(&args.log));
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match run(&args, live_view_wanted(&args), interrupt).await {
        Ok(outcome) => {
            match args.output {
                Output::Text => print!("{}", outcome.report.to_text()),
                Output::Json => println!("{}", outcome.report.to_json()),
            }
            if outcome.exit_code == EXIT_NO_DATA {
                eprintln!("demo-client: error: {}", outcome.report.no_calls_message());
            }
            ExitCode::from(outcome.exit_code)
        }
        Err(error) => {
            eprintln!("demo-client: error: {error}");
            ExitCode::from(EXIT_NO_DATA)
        }
    }
}
