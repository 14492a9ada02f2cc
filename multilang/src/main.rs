//! `kcl-multilang`: the MultiLangDaemon. Runs unmodified amazon-kclpy (Python) and aws-kcl
//! (Node) record processors on the Rust KCL, configured by the same `.properties` files.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    kinesis_client_multilang::cli::main(&args)
}
