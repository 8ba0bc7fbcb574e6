//! An operator console on a test pipeline's database and topology, with accounts of every
//! role, and a client that signs in and sends forms as a browser does (the session cookie, the
//! CSRF token taken from the page).

use std::sync::OnceLock;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use connector_workers::console::{
    Console, ConsoleAccount, ConsoleRole, ConsoleSettings, ConsoleState, hash_password,
};

use crate::pipeline::Pipeline;

/// Every test account's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// The accounts: a viewer, an operator and two approvers.
pub const ACCOUNTS: [(&str, ConsoleRole); 4] = [
    ("vera", ConsoleRole::Viewer),
    ("olga", ConsoleRole::Operator),
    ("abe", ConsoleRole::Approver),
    ("amy", ConsoleRole::Approver),
];

#[derive(Debug)]
pub struct TestConsole {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    client: reqwest::Client,
}

/// Starts a console on `p`'s database and topology until `p` shuts down.
pub async fn spawn_console(p: &Pipeline, four_eyes: bool) -> TestConsole {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| hash_password(PASSWORD).unwrap());
    let settings = ConsoleSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        four_eyes,
        accounts: ACCOUNTS
            .iter()
            .map(|(name, role)| ConsoleAccount {
                name: (*name).into(),
                role: *role,
                password_hash: hash.clone(),
            })
            .collect(),
        ..ConsoleSettings::default()
    };
    settings.validate().unwrap();
    let state = ConsoleState::new(
        p.db.pool.clone(),
        settings.clone(),
        &crate::amqp_url(),
        p.app.topology.clone(),
        crate::test_seal_keys(),
    )
    .unwrap();
    let console = Console::bind(settings.listen.unwrap(), state)
        .await
        .unwrap();
    let url = format!("http://{}", console.local_addr().unwrap());
    tokio::spawn(console.run_until_stopped(p.shutdown.clone()));
    TestConsole::at(&url)
}

/// A page's answer: status, `Location` (of a redirect) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub location: Option<String>,
    pub body: String,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            location: response
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            body: response.text().await.unwrap(),
        }
    }
}

impl TestConsole {
    /// A console already listening at `url` (one a workers process started).
    pub fn at(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Signs in with the sign-in form's token and cookie, as a browser does.
    pub async fn try_sign_in(&self, account: &str, password: &str) -> (Answer, Option<String>) {
        let form = self
            .client
            .get(format!("{}/login", self.url))
            .send()
            .await
            .unwrap();
        let sign_in_cookie = first_cookie(&form).unwrap();
        let token = hidden_csrf(&form.text().await.unwrap()).unwrap();
        let response = self
            .client
            .post(format!("{}/login", self.url))
            .header(COOKIE, sign_in_cookie)
            .form(&[
                ("account", account),
                ("password", password),
                ("csrf", &token),
            ])
            .send()
            .await
            .unwrap();
        let cookie = first_cookie(&response);
        (Answer::of(response).await, cookie)
    }

    pub async fn sign_in(&self, account: &str) -> Session {
        let (answer, cookie) = self.try_sign_in(account, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location.as_deref(), Some("/quarantine"));
        let cookie = cookie.expect("a session cookie");
        let mut session = Session {
            console: self.url.clone(),
            client: self.client.clone(),
            cookie,
            csrf: String::new(),
        };
        let page = session.get("/quarantine").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        session.csrf = hidden_csrf(&page.body).expect("a CSRF token on the page");
        session
    }

    /// A request without any session.
    pub async fn get_anonymous(&self, path: &str) -> Answer {
        Answer::of(
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Session {
    console: String,
    client: reqwest::Client,
    /// `name=value` of the session cookie.
    pub cookie: String,
    /// The session's CSRF token, as its pages carry it.
    pub csrf: String,
}

impl Session {
    pub async fn get(&self, path: &str) -> Answer {
        Answer::of(
            self.client
                .get(format!("{}{path}", self.console))
                .header(COOKIE, &self.cookie)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Posts `form` with the session's CSRF token added.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let mut fields = form.to_vec();
        fields.push(("csrf", &self.csrf));
        self.post_exactly(path, &fields, &[]).await
    }

    /// Posts `form` as given (no token added) with extra `headers`.
    pub async fn post_exactly(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.console))
            .header(COOKIE, &self.cookie)
            .form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::of(request.send().await.unwrap()).await
    }
}

fn first_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

/// The value of the page's first hidden `csrf` field.
pub fn hidden_csrf(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_owned())
}
