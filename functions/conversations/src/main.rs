fn main() -> std::process::ExitCode {
    shared::runtime::main(conversations::build)
}
