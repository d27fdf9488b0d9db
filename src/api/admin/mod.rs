//! The admin API: a GitLab-compatible subset under `/api/v4`, authenticated with the
//! admin token (`PRIVATE-TOKEN`), so python-gitlab and curl users feel at home.

pub mod audit;
pub mod environments;
pub mod features;
pub mod id_tokens;
pub mod lint;
pub mod meta;
pub mod pipelines;
pub mod projects;
pub mod releases;
pub mod resource_groups;
pub mod runners;
pub mod schedules;
pub mod triggers;
pub mod variables;

use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::api::params::{Check, Params};
use crate::error::ApiResult;

/// How far GitLab counts a list for its pagination headers: a longer one is not counted
/// (`api_kaminari_count_with_limit`, GitLab 11.8), so that a page of a long history does
/// not cost a count of all of it.
pub const COUNT_LIMIT: i64 = 10_000;

/// How many rows a list's count reads: one past [`COUNT_LIMIT`], which tells a longer list.
pub const COUNT_UP_TO: i64 = COUNT_LIMIT + 1;

/// GitLab's `page`/`per_page` (default 20, at most 100).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: usize,
    pub per_page: usize,
}

impl Page {
    pub fn from_check(c: &mut Check<'_>) -> Page {
        let page = c.int("page").flatten().unwrap_or(1).max(1) as usize;
        let per_page = c.int("per_page").flatten().unwrap_or(20).clamp(1, 100) as usize;
        Page { page, per_page }
    }

    /// One page of `items` as JSON with GitLab's pagination headers (`X-Total`,
    /// `X-Next-Page`, `Link`, …), which python-gitlab follows.
    pub fn respond<T: Serialize>(self, req: &HttpRequest, items: Vec<T>) -> HttpResponse {
        let total = items.len();
        let window = self.window(total);
        let slice: Vec<T> = items
            .into_iter()
            .skip(window.start)
            .take(window.len())
            .collect();
        self.respond_slice(req, total, slice)
    }

    /// Which of `total` items this page holds.
    pub fn window(self, total: usize) -> std::ops::Range<usize> {
        let start = (self.page - 1).saturating_mul(self.per_page).min(total);
        start..(start + self.per_page).min(total)
    }

    /// This page's items (made for [`Self::window`] alone) of `total`, with the headers.
    pub fn respond_slice<T: Serialize>(
        self,
        req: &HttpRequest,
        total: usize,
        slice: Vec<T>,
    ) -> HttpResponse {
        let total_pages = total.div_ceil(self.per_page).max(1);
        let next = (self.page < total_pages).then(|| self.page + 1);
        self.respond_with(req, Some(total), next, slice)
    }

    /// Where a statement reads this page from (its `OFFSET`).
    pub fn offset(self) -> i64 {
        let offset = (self.page - 1).saturating_mul(self.per_page);
        i64::try_from(offset).unwrap_or(i64::MAX)
    }

    /// How many rows a statement reads for this page (its `LIMIT`): one more than the
    /// page shows, which tells whether a next page exists.
    pub fn fetch(self) -> i64 {
        self.per_page as i64 + 1
    }

    /// A page read by a statement (`rows`: up to [`Self::fetch`] from [`Self::offset`]) of
    /// a list `counted` up to [`COUNT_UP_TO`]. Above GitLab's limit the list's length
    /// is not told: no `X-Total`, `X-Total-Pages` or `last` link (GitLab's
    /// `api_kaminari_count_with_limit`); `X-Next-Page` comes from the extra row.
    pub fn respond_rows<T: Serialize>(
        self,
        req: &HttpRequest,
        counted: usize,
        mut rows: Vec<T>,
    ) -> HttpResponse {
        let more = self.cut(&mut rows);
        self.respond_listed(req, counted, more, rows)
    }

    /// Cuts rows read for this page (up to [`Self::fetch`]) to the page; whether a row
    /// past it was read, that is, whether a next page exists.
    pub fn cut<T>(self, rows: &mut Vec<T>) -> bool {
        let more = rows.len() > self.per_page;
        rows.truncate(self.per_page);
        more
    }

    /// [`Self::respond_rows`] for a page whose rows were shown already: `more`, whether
    /// the statement read a row past the page.
    pub fn respond_listed<T: Serialize>(
        self,
        req: &HttpRequest,
        counted: usize,
        more: bool,
        shown: Vec<T>,
    ) -> HttpResponse {
        let next = more.then(|| self.page + 1);
        let total = (counted <= COUNT_LIMIT as usize).then_some(counted);
        self.respond_with(req, total, next, shown)
    }

    /// `slice` with the pagination headers: the list's length when it is told.
    fn respond_with<T: Serialize>(
        self,
        req: &HttpRequest,
        total: Option<usize>,
        next: Option<usize>,
        slice: Vec<T>,
    ) -> HttpResponse {
        let prev = (self.page > 1).then(|| self.page - 1);
        let link = |page: usize, rel: &str| {
            let base = req.full_url();
            let mut url = base.clone();
            let query: Vec<(String, String)> = base
                .query_pairs()
                .filter(|(k, _)| k != "page" && k != "per_page")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .chain([
                    ("page".into(), page.to_string()),
                    ("per_page".into(), self.per_page.to_string()),
                ])
                .collect();
            url.query_pairs_mut().clear().extend_pairs(query);
            format!("<{url}>; rel=\"{rel}\"")
        };
        let mut links = Vec::new();
        if let Some(p) = prev {
            links.push(link(p, "prev"));
        }
        if let Some(n) = next {
            links.push(link(n, "next"));
        }
        links.push(link(1, "first"));
        let mut response = HttpResponse::Ok();
        if let Some(total) = total {
            let total_pages = total.div_ceil(self.per_page).max(1);
            links.push(link(total_pages, "last"));
            response
                .insert_header(("X-Total", total.to_string()))
                .insert_header(("X-Total-Pages", total_pages.to_string()));
        }
        let opt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
        response
            .insert_header(("X-Per-Page", self.per_page.to_string()))
            .insert_header(("X-Page", self.page.to_string()))
            .insert_header(("X-Next-Page", opt(next)))
            .insert_header(("X-Prev-Page", opt(prev)))
            .insert_header(("Link", links.join(", ")))
            .json(slice)
    }
}

pub fn page_of(params: &Params) -> ApiResult<Page> {
    let mut c = Check::new(params);
    let page = Page::from_check(&mut c);
    c.finish()?;
    Ok(page)
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    meta::configure(cfg);
    runners::configure(cfg);
    features::configure(cfg);
    projects::configure(cfg);
    pipelines::configure(cfg);
    lint::configure(cfg);
    audit::configure(cfg);
    variables::configure(cfg);
    triggers::configure(cfg);
    schedules::configure(cfg);
    resource_groups::configure(cfg);
    id_tokens::configure(cfg);
    environments::configure(cfg);
    releases::configure(cfg);
}
