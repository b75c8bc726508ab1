//! HTTP, and only HTTP: the server (here: hyper 1.x over HTTP/1.1 with
//! keep-alive, optional TLS, the connections `net::Gate` admits, a graceful
//! drain), the router (authentication and role checks), the JSON error
//! shape, the request with its query and limits, and the answers' shapes.
//! Nothing here knows a feature: each owns its handlers (`routes.rs`) and
//! hands over [`Route`]s. Calls herald makes are in `outbound`.

mod call;
mod error;
mod resp;
mod router;
mod server;

pub use self::call::{Call, Query};
pub use self::error::ApiError;
pub use self::resp::{Resp, json, no_content, with_type};
pub use self::router::{OnFailure, Route, Router, param, segment};
pub use self::server::serve;
