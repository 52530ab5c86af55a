//! The Lambda `bootstrap` of a deployment package: keyward's Lambda mode alone, without the compiler or the command
//! line (`cargo xtask bootstrap` builds it), so it starts fast and ships small. It runs the package's `.cwasm`.

fn main() -> std::process::ExitCode {
    // Lambda starts it without arguments; anything else (`bootstrap --help`) is a person, who wants `keyward`.
    if std::env::args_os().len() > 1 {
        eprintln!(
            "bootstrap: takes no arguments: it is a Lambda function's runtime, configured by KEYWARD_* variables \
             (docs/settings.md lists them); run `keyward --help` for the command line"
        );
        return std::process::ExitCode::from(2);
    }
    keyward::logging::init_lambda_logging("info");
    keyward::lambda::main()
}
