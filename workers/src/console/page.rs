//! The console's one page layout and its small shared pieces (times, forms with their CSRF
//! token). maud escapes every interpolated value: text from a bank's body cannot become markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use time::OffsetDateTime;

use connector_schema::envelope::rfc3339;

/// Readable on a laptop screen without any front-end build.
const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d232b; background: #f6f7f9; }
header { background: #1d3557; color: #fff; padding: 10px 24px; display: flex; gap: 20px; align-items: center; flex-wrap: wrap; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header .who { margin-left: auto; font-weight: 400; }
header form { display: inline; }
main { padding: 16px 24px; max-width: 1280px; }
table { border-collapse: collapse; width: 100%; background: #fff; margin: 8px 0 20px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e2e5ea; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
pre { background: #fff; border: 1px solid #e2e5ea; padding: 10px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.flash { padding: 8px 12px; border-radius: 4px; margin: 8px 0; }
.ok { background: #e3f4e8; border: 1px solid #9fd4ae; }
.error { background: #fdecea; border: 1px solid #f1a9a0; }
form.act { background: #fff; border: 1px solid #e2e5ea; padding: 10px; margin: 8px 0; max-width: 640px; }
textarea { width: 100%; min-height: 3em; }
input, select, button { font: inherit; padding: 3px 6px; }
input[type=number] { width: 5em; }
.actions { display: flex; gap: 12px; flex-wrap: wrap; }
.actions form.act { flex: 1 1 360px; }
button { cursor: pointer; }
.muted { color: #67707c; }
"#;

/// Who a signed-in page is for: the account its header names, and the session's CSRF token its
/// forms carry. (A trait, so that pages need not know how sessions are kept.)
pub trait Viewer {
    fn account(&self) -> &str;
    fn role(&self) -> &'static str;
    fn csrf_token(&self) -> &str;
}

/// A signed-in page: navigation, who is signed in (and a sign-out form), then `body`.
pub fn layout(title: &str, who: &impl Viewer, body: Markup) -> Markup {
    let header = html! {
        a href="/quarantine" { "Quarantine" }
        a href="/requests" { "Requests" }
        a href="/dead-letters" { "Dead letters" }
        a href="/search" { "Search" }
        a href="/banks" { "Banks" }
        a href="/audit" { "Audit" }
        span.who {
            (who.account()) " (" (who.role()) ") "
            form method="post" action="/logout" {
                (csrf_field(who))
                button type="submit" id="sign-out" { "Sign out" }
            }
        }
    };
    document(title, header, body)
}

/// A page without a session: the sign-in form, an error.
pub fn anonymous(title: &str, body: Markup) -> Markup {
    document(title, html! {}, body)
}

fn document(title: &str, header: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · connector console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { strong { "connector console" } (header) }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every form of a session carries; actions without it are refused.
pub fn csrf_field(who: &impl Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf_token()); }
}

pub fn at(at: OffsetDateTime) -> String {
    rfc3339(at)
}

/// "3 h 12 min" since `since`, for ages in lists.
pub fn age(since: OffsetDateTime) -> String {
    let secs = (OffsetDateTime::now_utc() - since).whole_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

pub fn flash(message: Option<&str>, ok: bool) -> Markup {
    html! {
        @if let Some(message) = message {
            div class={ "flash " (if ok { "ok" } else { "error" }) } id="flash" { (message) }
        }
    }
}
