//! The bearer token `/v1` requires. Compared in constant time, so the time an answer takes
//! tells nothing about how much of a guess was right; a missing or wrong token is a 401 that
//! names neither the token nor what was sent.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::ApiContext;
use super::problem::Problem;

/// Whether `given` (an `Authorization` header) carries the token. Only equal lengths can
/// match; the length of the configured token is not a secret worth a timing defence.
fn bearer_matches(given: Option<&HeaderValue>, token: &str) -> bool {
    // The scheme's name is case-insensitive (RFC 9110 §11.1); the token is not.
    let Some(presented) = given
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
    else {
        return false;
    };
    presented.as_bytes().ct_eq(token.as_bytes()).into()
}

/// Middleware: refuses a request without the right bearer token with 401.
pub async fn require_token(
    State(ctx): State<Arc<ApiContext>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION);
    if bearer_matches(header, ctx.token.expose_secret()) {
        return next.run(request).await;
    }
    tracing::warn!(
        path = %request.uri().path(),
        given = header.is_some(),
        "API request refused: missing or wrong bearer token"
    );
    let mut r = Problem::new(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <token>)",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"payrecon\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(bearer_matches(Some(&h("Bearer s3cret")), "s3cret"));
        assert!(bearer_matches(Some(&h("bearer s3cret")), "s3cret"));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer S3CRET",
            "s3cret",
            "Bearer ",
            "Basic s3cret",
        ] {
            assert!(!bearer_matches(Some(&h(wrong)), "s3cret"), "{wrong}");
        }
        assert!(!bearer_matches(None, "s3cret"));
    }
}
