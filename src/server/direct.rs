//! `POST /rpc` served beside the router, on connections [`Server`](super::Server) accepts.
//!
//! Most requests are single heartbeats on `POST /rpc`, and for them axum's router costs more
//! than it does: it clones the application state (the dispatcher's handles, a dozen reference
//! counts bumped and dropped on counters the two runtime threads share), boxes the request
//! body and the handler's future, and fills the request's extensions (matched path, URL
//! parameters, body limit) that nobody reads. [`DirectRpc`] answers exactly that route with
//! the same steps in the same order — bearer token (HTTP 401), body within the limit (HTTP
//! 413, with axum's own rejection), dispatch, answer — and leaves every other method and path
//! to the router. Its answers are byte for byte the router's (a test in
//! `tests/suite/server.rs` compares the two on the wire); [`super::router`], for embedders,
//! keeps the router's route.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest};
use axum::http::Response;
use axum::http::{Method, Request};
use axum::response::IntoResponse;
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, Either, Full, Limited};

use super::{Identities, authorize, unauthorized};
use crate::rpc::Dispatcher;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of an answer on a connection `Server` accepted: the direct route's bytes (not
/// boxed), or the router's body.
pub(super) type ConnBody = Either<Full<Bytes>, axum::body::Body>;

/// `POST /rpc` without the router.
pub(super) struct DirectRpc {
    pub(super) dispatcher: Dispatcher,
    pub(super) identities: Option<Arc<Identities>>,
    pub(super) max_body_bytes: usize,
}

impl DirectRpc {
    /// Whether `request` is one this route answers: `POST` on the path `/rpc` (any query, as
    /// the router matches paths only).
    pub(super) fn takes<B>(request: &Request<B>) -> bool {
        request.method() == Method::POST && request.uri().path() == "/rpc"
    }

    /// Answers `request` as the router's `POST /rpc` would. The token is checked, and the
    /// request's head dropped, before the future is made: a connection boxes the future, and
    /// the smaller it is the less that copies.
    pub(super) fn serve<B>(
        self: Arc<Self>,
        request: Request<B>,
    ) -> impl Future<Output = Response<ConnBody>> + Send + use<B>
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Send,
    {
        let (head, body) = request.into_parts();
        let principal = match &self.identities {
            None => Ok(None),
            Some(identities) => authorize(identities, &head.headers)
                .cloned()
                .map(Some)
                .ok_or(()),
        };
        drop(head);
        async move {
            let principal = match principal {
                Ok(principal) => principal,
                Err(()) => return unauthorized().map(Either::Right),
            };
            let body = match collect(body, self.max_body_bytes).await {
                Ok(body) => body,
                Err(error) => return rejection(error).await.map(Either::Right),
            };
            let answer = match principal {
                None => self.dispatcher.handle_body_bytes(&body).await,
                Some(principal) => {
                    self.dispatcher
                        .for_principal(principal)
                        .handle_body_bytes(&body)
                        .await
                }
            };
            super::rpc_response(answer).map(Either::Left)
        }
    }
}

/// The whole body, at most `limit` bytes; a body in one frame (the usual case: it came with
/// its head) is taken without copying.
async fn collect<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    let body = Limited::new(body, limit);
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: not part of the body
        };
        match &first {
            None => first = Some(data),
            Some(first) => {
                if more.is_empty() {
                    more.extend_from_slice(first);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(_) if !more.is_empty() => Bytes::from(more),
        Some(first) => first,
        None => Bytes::new(),
    })
}

/// The answer the router gives when the body could not be read (HTTP 413 past the limit, 400
/// otherwise): axum's own `Bytes` extractor, fed a body that fails with the same error.
async fn rejection(error: BoxError) -> axum::response::Response {
    let mut request = Request::new(axum::body::Body::new(Failed(Some(error))));
    DefaultBodyLimit::disable().apply(&mut request);
    match Bytes::from_request(request, &()).await {
        Err(rejection) => rejection.into_response(),
        Ok(_) => unreachable!("a body whose first frame is an error is never collected"),
    }
}

/// A body whose first frame is an error met before.
struct Failed(Option<BoxError>);

impl HttpBody for Failed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.get_mut().0.take().map(Err))
    }
}
