fn main() -> std::process::ExitCode {
    shared::runtime::main(sso_login::build)
}
