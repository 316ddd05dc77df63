//! The web dashboard: one page and its static files, embedded in the binary.
//!
//! People who run acoustic surveys would rather look than query, so `GET /`
//! serves a page that drives the same public endpoints a script would (it
//! has no privileged access: it sends the API key the user types in). The
//! HTML, CSS and JavaScript are hand-written and compiled in with
//! `include_str!`, so there is no build step, no file to deploy next to the
//! binary and no request to any other host — the Content-Security-Policy
//! sent with the page forbids them.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::extract::ApiPath;
use crate::problem::Problem;

/// One embedded file.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    media_type: "text/html; charset=utf-8",
    body: include_str!("../assets/index.html"),
};

/// Files under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
    Asset {
        name: "charts.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/charts.js"),
    },
    Asset {
        name: "app.css",
        media_type: "text/css; charset=utf-8",
        body: include_str!("../assets/app.css"),
    },
    Asset {
        name: "icon.svg",
        media_type: "image/svg+xml",
        body: include_str!("../assets/icon.svg"),
    },
];

/// Only this origin; media and images may also come from `blob:` URLs the
/// page makes from authenticated fetches (audio, exports).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// Answers `asset`, or 304 when the client's copy is current. Every asset
/// is revalidated (`no-cache`): the names carry no version, and a
/// revalidation is one cheap 304.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset.body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /assets/{name}`: a script, style sheet or icon.
pub async fn asset(ApiPath(name): ApiPath<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => Problem::not_found(format!("there is no asset {name:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_self_contained() {
        for a in ASSETS.iter().chain([&INDEX]) {
            assert!(!a.body.is_empty(), "{}", a.name);
            for external in ["http://", "https://", "//cdn"] {
                let hits: Vec<_> = a
                    .body
                    .match_indices(external)
                    .map(|(i, _)| &a.body[i..(i + 40).min(a.body.len())])
                    .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{} refers to {hits:?}", a.name);
            }
        }
    }

    #[test]
    fn index_links_only_embedded_assets() {
        for (i, _) in INDEX.body.match_indices("/assets/") {
            let rest = &INDEX.body[i + 8..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(ASSETS.iter().any(|a| a.name == name), "{name}");
        }
    }
}
