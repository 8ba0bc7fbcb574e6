//! The operator console's per-bank view, read as an operator would after the run's refused
//! traffic: signed in through its form, the Banks page must show each bank's refusals by code,
//! which the console asks of the run's Prometheus (the ingress stores no refused request).

use anyhow::{Context as _, bail};
use reqwest::header::{COOKIE, SET_COOKIE};

use crate::configs::{BNC_CLIENT_KEY, CLIENT_ID, CONSOLE_ACCOUNT, CONSOLE_PASSWORD};

/// The refusals the Banks page must list (sender, route, code) after the auth-failure fault,
/// and a BNC partner's refusal of any code.
const EXPECTED: [(&str, &str, &str); 2] = [
    (CLIENT_ID, "corelink_status", "SIGNATURE_INVALID"),
    ("unknown", "corelink_status", "UNKNOWN_CLIENT"),
];

/// Problems with the per-bank view; empty when it shows what it should.
pub async fn check_banks_page(console: &str) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http.get(format!("{console}/login")).send().await?;
    let sign_in_cookie = first_cookie(&form).context("the sign-in form's cookie")?;
    let token = hidden_csrf(&form.text().await?).context("the sign-in form's token")?;
    let signed_in = http
        .post(format!("{console}/login"))
        .header(COOKIE, sign_in_cookie)
        .form(&[
            ("account", CONSOLE_ACCOUNT),
            ("password", CONSOLE_PASSWORD),
            ("csrf", &token),
        ])
        .send()
        .await?;
    if signed_in.status() != reqwest::StatusCode::SEE_OTHER {
        bail!("signing in to the console answered {}", signed_in.status());
    }
    let session = first_cookie(&signed_in).context("the console's session cookie")?;
    let page = http
        .get(format!("{console}/banks"))
        .header(COOKIE, session)
        .send()
        .await?
        .text()
        .await?;
    let Some(rows) = table_rows(&page, "refusals") else {
        let why = page
            .split("id=\"refusals-unavailable\">")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or("no refusals table");
        return Ok(vec![format!("console Banks page: {why}")]);
    };
    let mut problems = Vec::new();
    for (sender, route, code) in EXPECTED {
        if !rows
            .iter()
            .any(|row| row.len() == 4 && row[0] == sender && row[1] == route && row[2] == code)
        {
            problems.push(format!(
                "console Banks page: no refusals of {sender} on {route} with {code} in {rows:?}"
            ));
        }
    }
    if !rows
        .iter()
        .any(|row| row.first().map(String::as_str) == Some(BNC_CLIENT_KEY))
    {
        problems.push(format!(
            "console Banks page: no refusals of the BNC partner {BNC_CLIENT_KEY} in {rows:?}"
        ));
    }
    if problems.is_empty() {
        crate::console::out(format!(
            "console: the Banks page shows {} refusal rows from Prometheus, {CLIENT_ID}'s, unknown senders' and {BNC_CLIENT_KEY}'s among them",
            rows.len()
        ));
    }
    Ok(problems)
}

fn first_cookie(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get(SET_COOKIE)?.to_str().ok()?;
    value.split(';').next().map(str::to_owned)
}

fn hidden_csrf(page: &str) -> Option<String> {
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker)? + marker.len();
    Some(page[at..].split('"').next()?.to_owned())
}

/// The cells of each data row of the table with `id`, as text.
fn table_rows(page: &str, id: &str) -> Option<Vec<Vec<String>>> {
    let start = page.find(&format!("<table id=\"{id}\">"))?;
    let table = &page[start..start + page[start..].find("</table>")?];
    Some(
        table
            .split("<tr>")
            .skip(2) // before the first row, then the header row
            .map(|row| {
                row.split("<td>")
                    .skip(1)
                    .map(|cell| cell.split("</td>").next().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rows_of_one_table() {
        let page = r#"<table id="other"><tr><td>x</td></tr></table><table id="refusals"><tr><th>Bank</th></tr><tr><td>BANK</td><td>r</td><td>C</td><td>3</td></tr></table>"#;
        assert_eq!(
            table_rows(page, "refusals"),
            Some(vec![vec![
                "BANK".to_owned(),
                "r".into(),
                "C".into(),
                "3".into()
            ]])
        );
        assert_eq!(table_rows(page, "missing"), None);
    }
}
