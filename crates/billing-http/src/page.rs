//! Minimal HTML pages (the sandbox checkout, the checkout return page). Everything
//! interpolated goes through [`escape`].

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page with `title` (escaped here) and a body of trusted HTML (never cached: `serve` says
/// `Cache-Control: no-store` on every answer that sets none).
pub fn page(status: u16, title: &str, body_html: &str) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>\
             body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}\
             .card{{border:1px solid #ddd;border-radius:8px;padding:1.5rem}}\
             .muted{{color:#777;font-size:.9rem}} button{{font-size:1rem;padding:.6rem 1.2rem;margin-right:.5rem;border-radius:6px;border:1px solid #999;cursor:pointer}}\
             .pay{{background:#1a7f37;color:#fff;border-color:#1a7f37}} .decline{{background:#fff;color:#b42318;border-color:#b42318}}\
             </style></head><body><div class=\"card\"><h1>{title}</h1>{body_html}</div></body></html>",
            title = escape(title),
        ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
