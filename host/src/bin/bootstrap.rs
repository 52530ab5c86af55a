//! The Lambda `bootstrap` of a deployment package: keyward's Lambda mode alone, without the compiler or the command
//! line (`cargo xtask bootstrap` builds it), so it starts fast and ships small. It runs the package's `.cwasm`.

fn main() -> std::process::ExitCode {
    keyward::mask::init_logging("info");
    keyward::lambda::main()
}
