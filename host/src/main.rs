//! `keyward`: the command-line face of the host library. Each subcommand lives in `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
