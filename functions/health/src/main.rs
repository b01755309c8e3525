fn main() -> std::process::ExitCode {
    shared::runtime::main(health::build)
}
