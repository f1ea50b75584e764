//! The `iot-jobs-gateway` binary: parse configuration, set up logs, run.

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};
use iot_jobs_gateway::{
    app::{
        self,
        config::{Cli, Command},
    },
    cli, telemetry,
};

/// jemalloc, not glibc's malloc: after a burst of connections or streams
/// ends, its background thread gives the memory back to the system within
/// about 10 s (glibc kept it: 116 MB after a flood that briefly held 8,000
/// streams, 36 MB before it; jemalloc 45 MB; see BENCHMARKS.md, 17).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("iot-jobs-gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(cli.log_format);
            if let Err(err) = args.validate() {
                err.exit();
            }
            match runtime.block_on(app::commands::serve(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(
                    err @ (app::AppError::Config(_)
                    | app::AppError::Security(_)
                    | app::AppError::Redis(_)
                    | app::AppError::Events(_)),
                ) => {
                    eprintln!("iot-jobs-gateway: {err}");
                    ExitCode::from(2)
                }
                Err(err) => {
                    eprintln!("iot-jobs-gateway: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo(args) => {
            telemetry::init(cli.log_format);
            if let Err(err) = args.protection.validate() {
                err.exit();
            }
            exit(runtime.block_on(app::commands::demo(args)))
        }
        Command::Simulator(args) => {
            telemetry::init(cli.log_format);
            exit(runtime.block_on(app::commands::simulator(args)))
        }
        // Client commands write their answers, not logs.
        Command::DescribeJob(args) => runtime.block_on(cli::run(cli::describe_job(args))),
        Command::DescribeJobs(args) => runtime.block_on(cli::run(cli::describe_jobs(args))),
        Command::WatchJob(args) => runtime.block_on(cli::run(cli::watch::watch_job(args))),
        Command::DescribeJobExecution(args) => {
            runtime.block_on(cli::run(cli::executions::describe_job_execution(args)))
        }
        Command::ListJobExecutionsForJob(args) => {
            runtime.block_on(cli::run(cli::executions::list_job_executions_for_job(args)))
        }
        Command::ListJobExecutionsForThing(args) => runtime.block_on(cli::run(
            cli::executions::list_job_executions_for_thing(args),
        )),
    }
}

/// Bad command lines exit with clap's status 2, except for the client
/// subcommands, which exit with the AWS CLI's 252.
fn usage_error(err: clap::Error) -> ExitCode {
    let client = std::env::args_os()
        .skip(1)
        .any(|arg| arg.to_str().is_some_and(Command::is_client));
    let informational = matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if client && !informational {
        let _ = err.print();
        ExitCode::from(252)
    } else {
        err.exit()
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
