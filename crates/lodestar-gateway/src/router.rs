//! Which route a request takes: the longest matching prefix among the
//! routes for its host (a route without a host matches any host; one with a
//! host wins over one without at the same length).

use std::sync::Arc;

use crate::{
    config::{Config, RouteConfig},
    ratelimit::TokenBucket,
    retry::Budget,
    upstream::Upstream,
};

/// A route ready to serve: its configuration and the shared state its
/// requests use.
#[derive(Debug)]
pub struct Route {
    /// Its configuration.
    pub config: RouteConfig,
    /// Its service's instances and balancer.
    pub upstream: Arc<Upstream>,
    /// Its token bucket, if rate limited.
    pub limiter: Option<TokenBucket>,
    /// Its retry budget.
    pub budget: Budget,
}

/// The routes of one configuration, longest prefix first.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

// === impl Route ===

impl Route {
    /// A route of `config` over `upstream`.
    pub fn new(config: RouteConfig, upstream: Arc<Upstream>) -> Self {
        let limiter = config
            .rate_limit
            .as_ref()
            .map(|l| TokenBucket::new(l.per_sec, l.burst));
        let budget = Budget::new(config.retry.budget_ratio, config.retry.budget_min_per_sec);
        Self {
            config,
            upstream,
            limiter,
            budget,
        }
    }

    /// The path to forward: with the prefix removed when the route strips
    /// it (never empty: `/` at least).
    pub fn forward_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.config.strip_prefix {
            return path.into();
        }
        let prefix = self.config.prefix.trim_end_matches('/');
        let rest = path.strip_prefix(prefix).unwrap_or(path);
        if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        }
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.config.host
            && !host.is_some_and(|h| h.eq_ignore_ascii_case(want))
        {
            return false;
        }
        prefix_matches(&self.config.prefix, path)
    }
}

/// Whether `prefix` matches `path` on a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
}

// === impl Router ===

impl Router {
    /// A router over `routes` (built with their upstreams).
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        // Longest prefix first; at equal length, a host-bound route first.
        routes.sort_by(|a, b| {
            (b.config.prefix.len(), b.config.host.is_some())
                .cmp(&(a.config.prefix.len(), a.config.host.is_some()))
        });
        Self { routes }
    }

    /// Builds the routes of `config`, asking `upstream` for each service.
    pub fn from_config(
        config: &Config,
        mut upstream: impl FnMut(&RouteConfig) -> Arc<Upstream>,
    ) -> Self {
        let routes = config
            .routes
            .iter()
            .map(|r| Arc::new(Route::new(r.clone(), upstream(r))))
            .collect();
        Self::new(routes)
    }

    /// The route for `host` (without port) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(host, path))
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, Option<&str>, bool)]) -> Router {
        let upstream = Upstream::detached("svc");
        Router::new(
            routes
                .iter()
                .map(|(prefix, host, strip)| {
                    let mut config = RouteConfig::new(*prefix, "svc");
                    config.host = host.map(str::to_string);
                    config.strip_prefix = *strip;
                    Arc::new(Route::new(config, upstream.clone()))
                })
                .collect(),
        )
    }

    fn found(router: &Router, host: Option<&str>, path: &str) -> Option<String> {
        router.find(host, path).map(|r| {
            format!(
                "{}{}",
                r.config.prefix,
                r.config
                    .host
                    .as_deref()
                    .map(|h| format!("@{h}"))
                    .unwrap_or_default()
            )
        })
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let r = router(&[
            ("/", None, false),
            ("/api", None, false),
            ("/api/v2", None, false),
        ]);
        assert_eq!(found(&r, None, "/api/v2/x").as_deref(), Some("/api/v2"));
        assert_eq!(found(&r, None, "/api/v1").as_deref(), Some("/api"));
        assert_eq!(found(&r, None, "/api").as_deref(), Some("/api"));
        assert_eq!(found(&r, None, "/apix").as_deref(), Some("/"));
        let r = router(&[("/api", None, false)]);
        assert_eq!(found(&r, None, "/other"), None);
    }

    #[test]
    fn host_routes_win_and_filter() {
        let r = router(&[("/api", None, false), ("/api", Some("a.example"), false)]);
        assert_eq!(
            found(&r, Some("A.example"), "/api/x").as_deref(),
            Some("/api@a.example")
        );
        assert_eq!(
            found(&r, Some("b.example"), "/api/x").as_deref(),
            Some("/api")
        );
        assert_eq!(found(&r, None, "/api/x").as_deref(), Some("/api"));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let r = router(&[("/api", None, true), ("/web/", None, true)]);
        let api = r.find(None, "/api/users").unwrap();
        assert_eq!(api.forward_path("/api/users"), "/users");
        assert_eq!(api.forward_path("/api"), "/");
        let web = r.find(None, "/web/x").unwrap();
        assert_eq!(web.forward_path("/web/x"), "/x");
    }
}
