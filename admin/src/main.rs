//! `kcl-admin`: inspect and safely change a KCL lease table while workers run.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    kinesis_client_admin::cli::main(&args)
}
