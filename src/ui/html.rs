//! HTML building blocks: escaping, the page frame, small widgets.

use std::fmt::Write;

use actix_web::HttpResponse;
use chrono::NaiveDateTime;

/// Text made safe for an element's content or a quoted attribute.
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

/// Headers every page carries: no framing, scripts only from this server, no caching of
/// pages that show live state.
pub fn page_response(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

/// A part of a page, rendered again for `ui.js` to swap in: the page's headers, no frame.
pub fn fragment_response(body: String) -> HttpResponse {
    page_response(actix_web::http::StatusCode::OK, body)
}

/// A whole page: `title`, the navigation (when signed in) and `main`.
pub fn page(title: &str, signed_in: Option<&str>, main: &str) -> String {
    let nav = match signed_in {
        Some(csrf) => format!(
            "<nav aria-label=\"main\"><a class=\"brand\" href=\"/-/ui/runners\">Runway</a>\
             <a href=\"/-/ui/runners\">Runners</a><a href=\"/-/ui/projects\">Projects</a>\
             <a href=\"/-/ui/pipelines/new\">New pipeline</a>\
             <form method=\"post\" action=\"/-/ui/logout\" class=\"inline\">{}\
             <button type=\"submit\" class=\"link\">Sign out</button></form></nav>",
            csrf_field(csrf)
        ),
        None => "<nav aria-label=\"main\"><span class=\"brand\">Runway</span></nav>".into(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Runway</title><link rel=\"stylesheet\" href=\"/-/ui/assets/ui.css\">\
         <script src=\"/-/ui/assets/ui.js\" defer></script></head>\
         <body><header>{nav}</header><main id=\"main\">{main}</main></body></html>\n",
        escape(title)
    )
}

/// The hidden field that carries the session's CSRF token.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// A one-button form that POSTs to `action`.
pub fn button(action: &str, label: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}<button type=\"submit\">{}</button></form>",
        escape(action),
        csrf_field(csrf),
        escape(label)
    )
}

/// A status as a badge (the status name is also its class).
pub fn status(status: &str) -> String {
    format!("<span class=\"status s-{0}\">{0}</span>", escape(status))
}

/// A time in UTC, readable, in a `<time>` element.
pub fn time(t: &NaiveDateTime) -> String {
    format!(
        "<time datetime=\"{}Z\">{} UTC</time>",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.format("%Y-%m-%d %H:%M:%S")
    )
}

pub fn time_opt(t: &Option<NaiveDateTime>) -> String {
    t.as_ref().map_or_else(|| "—".into(), time)
}

/// `1h 02m 03s`, `4m 05s`, `6s`; a dash when it has not started.
pub fn duration(start: &Option<NaiveDateTime>, end: &Option<NaiveDateTime>) -> String {
    let Some(start) = start else {
        return "—".into();
    };
    let end = end.unwrap_or_else(crate::db::models::now);
    let secs = (end - *start).num_seconds().max(0);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h {m:02}m {s:02}s");
    } else if m > 0 {
        let _ = write!(out, "{m}m {s:02}s");
    } else {
        let _ = write!(out, "{s}s");
    }
    out
}

/// GitLab's `page`/`per_page` for a list page: page from 1, 20 a page unless asked (1–100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Paging {
    #[serde(default = "first_page")]
    pub page: usize,
    #[serde(default = "default_per_page")]
    pub per_page: usize,
}

fn first_page() -> usize {
    1
}

fn default_per_page() -> usize {
    20
}

impl Paging {
    /// The same page, with its numbers brought into range.
    pub fn clamped(self) -> Paging {
        Paging {
            page: self.page.max(1),
            per_page: self.per_page.clamp(1, 100),
        }
    }

    /// How many items come before this page.
    pub fn offset(&self) -> usize {
        (self.page - 1).saturating_mul(self.per_page)
    }

    /// This page of `items`.
    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let start = self.offset().min(items.len());
        &items[start..(start + self.per_page).min(items.len())]
    }

    /// `?page=…&per_page=…` for page `page`.
    pub fn query(&self, page: usize) -> String {
        format!("?page={page}&per_page={}", self.per_page)
    }

    /// Previous/next links under a list of `total` items at `path`; nothing when it all
    /// fits on one page.
    pub fn nav(&self, path: &str, total: usize) -> String {
        let pages = total.div_ceil(self.per_page).max(1);
        if pages == 1 && self.page == 1 {
            return String::new();
        }
        let link = |page: usize, rel: &str, label: &str| {
            format!(
                "<a href=\"{}{}\" rel=\"{rel}\">{label}</a>",
                escape(path),
                self.query(page)
            )
        };
        let prev = if self.page > 1 {
            link((self.page - 1).min(pages), "prev", "← Previous")
        } else {
            String::new()
        };
        let next = if self.page < pages {
            link(self.page + 1, "next", "Next →")
        } else {
            String::new()
        };
        format!(
            "<nav class=\"pages\" aria-label=\"Pages\">{prev}<span>Page {} of {pages} ({total})</span>{next}</nav>",
            self.page
        )
    }
}

impl Default for Paging {
    fn default() -> Paging {
        Paging {
            page: first_page(),
            per_page: default_per_page(),
        }
    }
}

/// A byte count for people: `812 B`, `512 KiB`, `3.4 MiB`.
pub fn size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.0} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn durations_read_like_gitlabs() {
        let t = |s| chrono::DateTime::from_timestamp(s, 0).map(|d| d.naive_utc());
        assert_eq!(duration(&t(0), &t(6)), "6s");
        assert_eq!(duration(&t(0), &t(245)), "4m 05s");
        assert_eq!(duration(&t(0), &t(3723)), "1h 02m 03s");
        assert_eq!(duration(&None, &t(1)), "—");
    }

    #[test]
    fn pages_link_to_their_neighbours() {
        let paging = Paging {
            page: 2,
            per_page: 10,
        };
        assert_eq!(
            paging.slice(&(0..25).collect::<Vec<_>>()),
            (10..20).collect::<Vec<_>>()
        );
        assert_eq!(
            paging.nav("/-/ui/projects", 25),
            "<nav class=\"pages\" aria-label=\"Pages\"><a href=\"/-/ui/projects?page=1&per_page=10\" rel=\"prev\">← Previous</a>\
             <span>Page 2 of 3 (25)</span><a href=\"/-/ui/projects?page=3&per_page=10\" rel=\"next\">Next →</a></nav>"
        );
        assert_eq!(Paging::default().nav("/x", 20), "", "one page: no links");
        let past = Paging {
            page: 9,
            per_page: 10,
        };
        assert!(past.slice(&[1, 2, 3]).is_empty());
        assert!(
            past.nav("/x", 25)
                .contains("href=\"/x?page=3&per_page=10\" rel=\"prev\""),
            "back to the last page"
        );
        assert_eq!(
            Paging {
                page: 0,
                per_page: 1000
            }
            .clamped(),
            Paging {
                page: 1,
                per_page: 100
            }
        );
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(512 * 1024), "512 KiB");
        assert_eq!(size(3_565_158), "3.4 MiB");
    }
}
