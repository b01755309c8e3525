//! The OpenAPI description of what the shared layers and the error type add
//! to every route. Each function describes its own routes beside its
//! handlers (`#[utoipa::path]`); [`SharedLayers`] completes every operation
//! from here, so what the layers do is written down once: 400 for another
//! host, 413 over the body limit and 500 for a bug on any route; 415 and
//! 422 wherever a JSON body is read; `WWW-Authenticate` on every 401 and
//! `Retry-After` on every 503; `X-Request-Id` on every response; and the
//! `{"detail"}` error body.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, Object, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type, header::Header,
};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// The security scheme of the protected routes: `Authorization: Bearer <API token>`.
pub const BEARER: &str = "bearer";

/// Completes a document with what every function's layers do.
pub struct SharedLayers;

impl utoipa::Modify for SharedLayers {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
        components.security_schemes.insert(
            BEARER.into(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An API token from POST /api/v1/auth/login/sso; any problem with it is a 401",
                    ))
                    .build(),
            )),
        );
        for item in doc.paths.paths.values_mut() {
            for operation in operations(item) {
                complete(operation);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn complete(operation: &mut Operation) {
    let mut shared = vec![
        (
            "400",
            "Invalid host header: the Host is not in ALLOWED_HOSTS",
        ),
        ("413", "Request body too large"),
        (
            "500",
            "A bug: \"Internal Server Error\" and the request id; the cause is in the log",
        ),
    ];
    if operation.request_body.is_some() {
        shared.push((
            "415",
            "The body is not sent with Content-Type: application/json",
        ));
        shared.push(("422", "The body is not JSON, or not of this shape"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        // A function's own description of a status comes first.
        responses
            .entry(status.into())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        response.headers.insert(
            "X-Request-Id".into(),
            header(
                Type::String,
                "The platform's request id (Lambda, FC) or a generated one",
            ),
        );
        match status.as_str() {
            "401" => {
                response
                    .headers
                    .insert("WWW-Authenticate".into(), header(Type::String, "Bearer"));
            }
            "503" => {
                response.headers.insert(
                    "Retry-After".into(),
                    header(Type::Integer, "Seconds to wait before retrying"),
                );
            }
            _ => {}
        }
    }
}

/// A response whose body is `{"detail"}`.
pub fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
        )
        .build()
}

fn header(value: Type, description: &str) -> RefOr<Header> {
    let mut header = Header::new(Object::with_type(value));
    header.description = Some(description.into());
    RefOr::T(header)
}
