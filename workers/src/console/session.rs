//! Sign-in, sessions and CSRF. A session is a random token in a `Secure`, `HttpOnly`,
//! `SameSite=Strict` cookie; the database keeps only its SHA-256 (any console process serves
//! it). Each session has its own CSRF token, which every form carries and every action checks;
//! a form posted from another site (its `Origin` or `Sec-Fetch-Site` says so) is refused too.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::config::{ConsoleAccount, ConsoleRole};
use crate::console::ConsoleState;
use crate::console::error::ConsoleError;
use crate::console::page;

/// `__Host-`: the browser accepts it only if `Secure`, for this host, path `/`.
pub const SESSION_COOKIE: &str = "__Host-console-session";
/// Before a session exists: the sign-in form's double-submitted token.
pub const SIGN_IN_COOKIE: &str = "__Host-console-sign-in";

/// Failed sign-ins allowed per account name and minute, on top of argon2's own cost.
const SIGN_IN_FAILURES_PER_MINUTE: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// A signed-in operator, as the session row says.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub account: String,
    pub role: ConsoleRole,
    pub csrf_token: String,
    token_sha256: Vec<u8>,
}

impl SignedIn {
    /// Refuses (and says why) when the account's role is below `role`.
    pub fn require(&self, role: ConsoleRole, action: &str) -> Result<(), ConsoleError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(format!(
                "refused: {action} needs the role {} or above; {} is a {}",
                role.as_str(),
                self.account,
                self.role.as_str()
            )))
        }
    }

    pub fn check_csrf(&self, sent: &str) -> Result<(), ConsoleError> {
        if constant_time_eq(sent.as_bytes(), self.csrf_token.as_bytes()) {
            Ok(())
        } else {
            Err(ConsoleError::CsrfRejected)
        }
    }
}

impl page::Viewer for SignedIn {
    fn account(&self) -> &str {
        &self.account
    }

    fn role(&self) -> &'static str {
        self.role.as_str()
    }

    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignInNeeded)?;
        let token_sha256 = Sha256::digest(token.as_bytes()).to_vec();
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT account, role, csrf_token FROM console_sessions
             WHERE token_sha256 = $1 AND expires_at > now()",
        )
        .bind(&token_sha256)
        .fetch_optional(&state.pool)
        .await?;
        let (account, role, csrf_token) = row.ok_or(ConsoleError::SignInNeeded)?;
        // An account removed from the configuration, or given another role, is signed out.
        let configured = state.account(&account).map(|a| a.role);
        match ConsoleRole::parse(&role) {
            Some(role) if configured == Some(role) => Ok(Self {
                account,
                role,
                csrf_token,
                token_sha256,
            }),
            _ => Err(ConsoleError::SignInNeeded),
        }
    }
}

/// Failed sign-ins per account name in the last minute: a guessing attacker (or a typo loop)
/// gets [`SIGN_IN_FAILURES_PER_MINUTE`] tries a minute, then is refused unchecked until the
/// oldest failure is a minute old. Successful sign-ins are not counted. (A name is enough to
/// trigger it, so someone can hold an account back for a minute at a time, never take it.)
#[derive(Debug, Default)]
pub struct SignInLimiter(Mutex<HashMap<String, VecDeque<Instant>>>);

impl SignInLimiter {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        // A poisoned lock only means a panic elsewhere mid-update of a counter: keep counting.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn exhausted(&self, name: &str) -> bool {
        let mut failures = self.failures();
        let now = Instant::now();
        failures.retain(|_, times| {
            times.retain(|at| now.duration_since(*at) < FAILURE_WINDOW);
            !times.is_empty()
        });
        failures
            .get(name)
            .is_some_and(|times| times.len() >= SIGN_IN_FAILURES_PER_MINUTE)
    }

    fn failed(&self, name: &str) {
        self.failures()
            .entry(name.to_owned())
            .or_default()
            .push_back(Instant::now());
    }
}

/// Checks `password` against the account's argon2 hash and opens a session; returns the cookie
/// token and the session. An unknown name costs the same hashing as a known one.
pub async fn sign_in(
    state: &ConsoleState,
    name: &str,
    password: &str,
) -> Result<(String, SignedIn), ConsoleError> {
    let refused = || ConsoleError::Forbidden("unknown account or wrong password".into());
    if state.sign_in_limiter.exhausted(name) {
        return Err(ConsoleError::Forbidden(format!(
            "too many sign-in attempts for {name}; wait a minute"
        )));
    }
    let account: Option<ConsoleAccount> = state.account(name).cloned();
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| state.decoy_hash.clone());
    let password = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|error| ConsoleError::Internal(error.into()))?;
    let account = match account {
        Some(account) if matches => account,
        _ => {
            state.sign_in_limiter.failed(name);
            return Err(refused());
        }
    };
    let token = random_token();
    let session = SignedIn {
        account: account.name.clone(),
        role: account.role,
        csrf_token: random_token(),
        token_sha256: Sha256::digest(token.as_bytes()).to_vec(),
    };
    // Expired sessions go as new ones come: the table stays the size of the signed-in.
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
        .execute(&state.pool)
        .await?;
    sqlx::query(
        "INSERT INTO console_sessions (token_sha256, account, role, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(&session.token_sha256)
    .bind(&session.account)
    .bind(session.role.as_str())
    .bind(&session.csrf_token)
    .bind(state.settings.session_ttl_secs as f64)
    .execute(&state.pool)
    .await?;
    Ok((token, session))
}

pub async fn sign_out(state: &ConsoleState, who: &SignedIn) -> Result<(), ConsoleError> {
    sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = $1")
        .bind(&who.token_sha256)
        .execute(&state.pool)
        .await?;
    Ok(())
}

/// Refuses a state-changing request another site made the browser send: its `Origin` names
/// another host, or `Sec-Fetch-Site` says cross-site. (The CSRF token is checked as well, by
/// each action: this layer alone would trust browsers that send neither header.)
pub async fn same_origin_posts(request: Request, next: Next) -> Result<Response, ConsoleError> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let headers = request.headers();
        if headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"cross-site")
        {
            return Err(ConsoleError::CsrfRejected);
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let host = headers.get(HOST).map(|h| h.as_bytes()).unwrap_or_default();
            let origin_host = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, host)| host.as_bytes());
            if origin_host != Some(host) {
                return Err(ConsoleError::CsrfRejected);
            }
        }
    }
    Ok(next.run(request).await)
}

pub fn session_cookie(token: &str, ttl_secs: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={ttl_secs}"
    )
}

pub fn sign_in_cookie(token: &str) -> String {
    format!("{SIGN_IN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600")
}

pub fn cleared_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An argon2id PHC string of `password`, with a random salt (`console hash-password`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|error| anyhow::anyhow!("encoding a salt: {error}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))?
        .to_string())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse").expect("hashed");
        let parsed = PasswordHash::new(&hash).expect("a PHC string");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"correct horsf", &parsed)
                .is_err()
        );
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            "a=1; __Host-console-session=tok; b=2".parse().expect("hv"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, "console-session"), None);
    }
}
