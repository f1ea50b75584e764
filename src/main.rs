//! The `iot-jobs-gateway` binary: parse configuration, set up logs, run.

use std::process::ExitCode;

use clap::Parser;
use iot_jobs_gateway::{
    app,
    config::{Cli, Command},
    telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("iot-jobs-gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            if let Err(err) = args.validate() {
                err.exit();
            }
            match runtime.block_on(app::serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err @ app::AppError::Config(_)) => {
                    eprintln!("iot-jobs-gateway: {err}");
                    ExitCode::from(2)
                }
                Err(err) => {
                    eprintln!("iot-jobs-gateway: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => exit(runtime.block_on(app::demo(args))),
        Command::Simulator(args) => exit(runtime.block_on(app::simulator(args))),
    }
}

fn exit(result: Result<(), app::AppError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iot-jobs-gateway: {err}");
            ExitCode::FAILURE
        }
    }
}
