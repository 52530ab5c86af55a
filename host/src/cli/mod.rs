//! Command-line interface: one module per subcommand, each a `clap` args struct with a `run` method.

mod artifact;
mod crypt;
mod invoke;
mod keygen;
mod new;
mod seal;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run WebAssembly Lambda handlers that reach secrets only through a KMS capability of the host.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about)]
struct Cli {
    /// Log host events to stderr (-v: failed invocations, audit lines and guest output; -vv: debug, each invocation too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Keygen),
    Encrypt(crypt::Encrypt),
    Decrypt(crypt::Decrypt),
    Seal(seal::Seal),
    Invoke(invoke::Invoke),
    Serve(serve::Serve),
    Compile(artifact::Compile),
    Digest(artifact::Digest),
    Package(artifact::Package),
    New(new::New),
    /// Run as the Lambda `bootstrap`, configured by KEYWARD_* variables (the default when started by Lambda,
    /// that is with AWS_LAMBDA_RUNTIME_API set and no arguments).
    Lambda,
}

/// Exit code for a failed guest or decrypt: the input was fine, the outcome was not.
const EXIT_FAILED: u8 = 1;
/// Exit code for unusable input: arguments, files, components, configuration.
const EXIT_BAD_INPUT: u8 = 2;

/// An error whose cause is the outcome, not the input (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Failed(anyhow::Error);

pub(crate) fn main() -> ExitCode {
    // Lambda starts `bootstrap` without arguments.
    let started_by_lambda = std::env::args_os().len() == 1 && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let cli = if started_by_lambda {
        Cli { verbose: 1, command: Command::Lambda }
    } else {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) => return usage_error(&e),
        }
    };
    // Lambda mode logs failed invocations and audit lines by default, however it was started.
    let lambda = matches!(cli.command, Command::Lambda);
    init_logging(if lambda { cli.verbose.max(1) } else { cli.verbose }, lambda);
    let result = match cli.command {
        Command::Keygen(cmd) => cmd.run(),
        Command::Encrypt(cmd) => cmd.run(),
        Command::Decrypt(cmd) => cmd.run(),
        Command::Invoke(cmd) => block_on(cmd.run()),
        Command::Serve(cmd) => block_on(cmd.run()),
        Command::Seal(cmd) => block_on(cmd.run()),
        Command::Compile(cmd) => cmd.run(),
        Command::Digest(cmd) => cmd.run(),
        Command::Package(cmd) => cmd.run(),
        Command::New(cmd) => cmd.run(),
        Command::Lambda => return keyward::lambda::main(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Runs an async command on a runtime of its own.
fn block_on(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    }
}

/// clap's refusal of the arguments in one line, as every other error (help and version are printed as clap does).
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::from(if error.use_stderr() { EXIT_BAD_INPUT } else { 0 });
    }
    let arg = match error.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(arg)) => arg.clone(),
        _ => String::new(),
    };
    // A value of --env may be a secret (a plain variable of the guest's): the refusal says what is wrong without it.
    if matches!(error.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) && arg.starts_with("--env") {
        eprintln!(
            "keyward: error: a value of --env is not of the form NAME=VALUE with a non-empty NAME (not shown, in \
             case it is a secret); see `{}`",
            help_hint()
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    // So may a value of --source (a secret pasted instead of where it lives) or --inject (a token pasted in place of
    // {secret}): the reason is given, never clap's echo of the value (--inject's validator quotes no template).
    let invalid_value = matches!(error.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue);
    if invalid_value && (arg.starts_with("--source") || arg.starts_with("--inject")) {
        let reason = match arg.starts_with("--source") {
            true => "is not of the form NAME=SOURCE with a non-empty NAME (not shown, in case it is a secret)".into(),
            false => {
                format!("is refused: {}", std::error::Error::source(error).map(ToString::to_string).unwrap_or_default())
            }
        };
        let flag = arg.split(' ').next().unwrap_or_default();
        eprintln!("keyward: error: a value of {flag} {}; see `{}`", keyward::error::one_line(&reason), help_hint());
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    // A stray argument is echoed only if it looks like a mistyped flag: a secret given without --plaintext (a PEM,
    // a password) must not land in a terminal's scrollback or a CI log.
    if error.kind() == ErrorKind::UnknownArgument {
        let stray = arg;
        let flag_like = stray.starts_with('-') && !stray.starts_with("---") && stray.len() <= 40;
        if !(flag_like && stray.chars().all(|c| c.is_ascii_graphic())) {
            eprintln!(
                "keyward: error: an unexpected argument (not shown, in case it is a secret); see `{}`",
                help_hint()
            );
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    }
    // The first paragraph says what is wrong (with the missing arguments on lines of their own); usage and tips
    // follow it.
    let rendered = error.render().to_string();
    let paragraph: Vec<&str> = rendered.lines().map(str::trim).take_while(|line| !line.is_empty()).collect();
    let what = paragraph.join(" ");
    let what = what.strip_prefix("error: ").unwrap_or(&what);
    eprintln!("keyward: error: {}; see `{}`", keyward::error::one_line(what), help_hint());
    ExitCode::from(EXIT_BAD_INPUT)
}

/// Where help for the arguments is: `keyward <verb> --help` when they name a verb (as cargo's errors point to
/// `cargo <verb> --help`).
fn help_hint() -> String {
    use clap::CommandFactory as _;
    let verb = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    match verb {
        Some(verb) if Cli::command().find_subcommand(&verb).is_some() => format!("keyward {verb} --help"),
        _ => "keyward --help".into(),
    }
}

/// A component's load error naming the file (a read error names it already).
fn naming(component: &std::path::Path, error: keyward::LoadError) -> anyhow::Error {
    match error {
        keyward::LoadError::Io { .. } => error.into(),
        error => anyhow::Error::from(error).context(component.display().to_string()),
    }
}

/// Prints one line for the error and picks the exit code.
fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("keyward: error: {}", keyward::error::one_line(&format!("{error:#}")));
    ExitCode::from(if error.is::<Failed>() { EXIT_FAILED } else { EXIT_BAD_INPUT })
}

fn init_logging(verbose: u8, lambda: bool) {
    let level = match verbose {
        0 => "error",
        1 => "info",
        _ => "debug",
    };
    if lambda { keyward::logging::init_lambda_logging(level) } else { keyward::logging::init_logging(level) }
}
