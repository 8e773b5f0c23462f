//! The `vigil` command line; everything is in `vigil::cli`.

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
