//! HTML pieces every page shares: escaping, the common layout (no scripts,
//! no external assets, readable on a phone) and the page's answer.

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::HeaderValue;

use crate::http::{self, Resp};

/// A page as an answer; no referrer leaves for another site, since its URL
/// may hold a link's token (our own forms keep their origin).
pub fn response(status: StatusCode, page: String) -> Resp {
    let mut r = http::with_type(status, Bytes::from(page), "text/html; charset=utf-8");
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The whole page, wrapped in the common layout.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>herald: {title}</title><style>\
         body{{font-family:sans-serif;max-width:72em;margin:1em auto;padding:0 1em}}\
         table{{border-collapse:collapse;width:100%;margin-bottom:1.5em}}\
         th,td{{text-align:left;padding:.25em .5em;border-bottom:1px solid #ddd;vertical-align:top}}\
         .ko{{color:#b00;font-weight:bold}}.ok{{color:#070}}.warn{{color:#a60}}\
         code{{font-size:.9em}}form{{margin:1em 0}}button{{font-size:1em;padding:.5em 1em}}\
         form.inline{{display:inline-block;margin:.2em .4em .2em 0}}\
         tr.ko-row td{{background:#fde2e2;color:#8a0000}}.done{{background:#e6f4e6;padding:.5em}}\
         @media (max-width:40em){{th,td{{display:block;border:0}}tr{{display:block;border-bottom:1px solid #ccc;padding:.3em 0}}}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    )
}
