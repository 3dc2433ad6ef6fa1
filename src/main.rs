//! The `medic` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    medic::cli::main()
}
