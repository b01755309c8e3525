//! Prints the OpenAPI document of every route; `make openapi` writes it to docs/openapi.json.

fn main() {
    print!("{}", tools::openapi_json());
}
