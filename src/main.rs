fn main() -> std::process::ExitCode {
    ckpt::cli::main()
}
