//! The page: one HTML file, one script, one stylesheet, compiled into the
//! binary so it loads instantly and needs nothing on disk. The API key is
//! put into the page as it is served (a `<meta>` tag the script reads).

use super::http::Response;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");
/// Replaced by the key when the page is served.
const KEY_MARK: &str = "__CANOPY_API_KEY__";

/// No scripts or styles but ours, no framing, no referrer.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; \
                           connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Answers `GET` (or `HEAD`) for the page and its files.
pub fn page(method: &str, path: &str, key: &str) -> Result<Response, Response> {
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(405, "Method Not Allowed", "only GET\n").with_header("Allow", "GET, HEAD"));
    }
    let response = match path {
        "/" | "/index.html" => Response::new(
            200,
            "OK",
            "text/html; charset=utf-8",
            INDEX.replace(KEY_MARK, key),
        ),
        "/app.js" => Response::new(200, "OK", "text/javascript; charset=utf-8", SCRIPT),
        "/style.css" => Response::new(200, "OK", "text/css; charset=utf-8", STYLE),
        "/icon.svg" => Response::new(200, "OK", "image/svg+xml", ICON),
        _ => return Err(Response::text(404, "Not Found", "not found\n")),
    };
    Ok(response
        .with_header("Content-Security-Policy", PAGE_POLICY)
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_key_and_a_strict_policy() {
        let page = page("GET", "/", "k3y").unwrap();
        let text = String::from_utf8(page.body).unwrap();
        assert!(text.contains("content=\"k3y\""));
        assert!(!text.contains(KEY_MARK));
        assert!(page
            .headers
            .iter()
            .any(|(name, value)| *name == "Content-Security-Policy"
                && value.contains("frame-ancestors 'none'")));
        assert_eq!(super::page("GET", "/../etc/passwd", "k").unwrap_err().status, 404);
        assert_eq!(super::page("POST", "/", "k").unwrap_err().status, 405);
    }
}
