//! The Web API through rspotify: rspotify owns the tokens (client credentials, PKCE, refresh),
//! lake owns the requests. Every answer is kept as JSON and parsed leniently by the streams,
//! because Spotify removes fields without notice and rspotify's typed models then fail or drop
//! the item.
//!
//! Retries follow what Spotify asks for: 429 waits out Retry-After; 5xx and timeouts back off a
//! bounded number of times; 401 refreshes the token once. 403 and 404 are returned as
//! [`ExtractError::Unavailable`] so a stream can report a retired endpoint and carry on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rspotify::clients::BaseClient;
use rspotify::http::HttpError;
use rspotify::{
    AuthCodePkceSpotify, ClientCredsSpotify, ClientError, Config, Credentials, OAuth, Token,
};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::token;
use crate::config::SpotifySettings;
use crate::extract::ExtractError;

/// The Web API, unless configured otherwise.
pub const DEFAULT_API_URL: &str = "https://api.spotify.com/v1/";
/// The accounts service, unless configured otherwise.
pub const DEFAULT_ACCOUNTS_URL: &str = "https://accounts.spotify.com/";
/// The redirect URI of `lake auth spotify`, unless configured otherwise. Spotify accepts
/// loopback redirects only as an IP literal.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:8888/callback";
/// The scopes the user streams need.
pub const SCOPES: &[&str] = &[
    "user-read-recently-played",
    "user-library-read",
    "user-top-read",
    "user-follow-read",
    "playlist-read-private",
    "playlist-read-collaborative",
];

/// The first backoff after a 5xx or a timeout; it doubles each retry.
const BACKOFF: Duration = Duration::from_millis(250);
/// 429s waited out per request before giving up.
const MAX_RATE_LIMITED: u32 = 10;

/// Which token a client holds.
#[derive(Clone)]
enum Inner {
    /// Client credentials: the public catalog.
    App(ClientCredsSpotify),
    /// A listener's token, from `lake auth spotify`.
    User(AuthCodePkceSpotify),
}

/// A Spotify client with lake's retry policy.
#[derive(Clone)]
pub struct Api {
    inner: Inner,
    max_retries: u32,
    max_retry_after: u64,
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::App(_) => "client credentials",
            Inner::User(_) => "user",
        };
        f.debug_struct("Api").field("token", &kind).finish()
    }
}

/// rspotify's settings from lake's.
pub fn rspotify_config(settings: &SpotifySettings) -> Config {
    let slash = |s: &str| {
        if s.ends_with('/') {
            s.to_string()
        } else {
            format!("{s}/")
        }
    };
    Config {
        api_base_url: slash(settings.api_url.as_deref().unwrap_or(DEFAULT_API_URL)),
        auth_base_url: slash(
            settings
                .accounts_url
                .as_deref()
                .unwrap_or(DEFAULT_ACCOUNTS_URL),
        ),
        token_cached: false,
        token_refreshing: true,
        ..Config::default()
    }
}

/// The client ID, or an error that says where to set it.
pub fn client_id(settings: &SpotifySettings) -> Result<String, ExtractError> {
    settings
        .client_id
        .clone()
        .ok_or_else(|| ExtractError::Auth {
            message: "no client ID: set SPOTIFY_CLIENT_ID or `spotify.client_id` in lake.toml"
                .into(),
        })
}

impl Api {
    /// A client-credentials client for the public catalog. Fetches its token now, so that bad
    /// credentials fail before any stream starts.
    pub async fn app(settings: &SpotifySettings) -> Result<Self, ExtractError> {
        let id = client_id(settings)?;
        let secret = settings
            .client_secret
            .as_ref()
            .ok_or_else(|| ExtractError::Auth {
                message: "no client secret: set SPOTIFY_CLIENT_SECRET or `spotify.client_secret`"
                    .into(),
            })?;
        let creds = Credentials::new(&id, secret.expose_secret());
        let client = ClientCredsSpotify::with_config(creds, rspotify_config(settings));
        let api = Self::new(Inner::App(client.clone()), settings);
        api.with_retries("api/token", || client.request_token())
            .await?;
        Ok(api)
    }

    /// A user client from the token file written by `lake auth spotify`. A refreshed token is
    /// written back at once, because Spotify may rotate the refresh token.
    pub fn user(settings: &SpotifySettings, token_file: PathBuf) -> Result<Self, ExtractError> {
        let id = client_id(settings)?;
        let saved = token::read(&token_file)?;
        let mut config = rspotify_config(settings);
        let refresh = saved.refresh_token.clone();
        let path = token_file.clone();
        config.token_callback_fn = Arc::new(Some(rspotify::TokenCallback(Box::new(
            move |mut fresh: Token| {
                if fresh.refresh_token.is_none() {
                    fresh.refresh_token = refresh.clone();
                }
                token::write(&path, &fresh)
                    .map_err(|e| rspotify::CallbackError::CustomizedError(e.to_string()))
            },
        ))));
        let oauth = OAuth {
            redirect_uri: settings
                .redirect_uri
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIRECT_URI.into()),
            ..OAuth::default()
        };
        let client = AuthCodePkceSpotify::from_token_with_config(
            saved,
            Credentials::new_pkce(&id),
            oauth,
            config,
        );
        Ok(Self::new(Inner::User(client), settings))
    }

    fn new(inner: Inner, settings: &SpotifySettings) -> Self {
        Self {
            inner,
            max_retries: settings.max_retries.unwrap_or(5),
            max_retry_after: settings.max_retry_after.unwrap_or(300),
            calls: Arc::default(),
        }
    }

    /// Whether this client acts for a listener.
    pub fn is_user(&self) -> bool {
        matches!(self.inner, Inner::User(_))
    }

    /// Requests made so far, retries included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// GET `path` (relative to the API base) and parse the answer as JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ExtractError> {
        let query: HashMap<&str, &str> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let text = self
            .with_retries(path, || async {
                match &self.inner {
                    Inner::App(c) => c.api_get(path, &query).await,
                    Inner::User(c) => c.api_get(path, &query).await,
                }
            })
            .await?;
        serde_json::from_str(&text).map_err(|e| ExtractError::Api {
            endpoint: path.to_string(),
            message: format!("the answer is not JSON: {e}"),
        })
    }

    async fn refresh(&self) -> Result<(), ClientError> {
        match &self.inner {
            Inner::App(c) => c.refresh_token().await,
            Inner::User(c) => c.refresh_token().await,
        }
    }

    /// Runs `call` under the retry policy.
    async fn with_retries<T, F, Fut>(&self, endpoint: &str, call: F) -> Result<T, ExtractError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        let mut refreshed = false;
        loop {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let err = match call().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let api_err = |message: String| ExtractError::Api {
                endpoint: endpoint.to_string(),
                message,
            };
            let response = match err {
                ClientError::Http(http) => match *http {
                    HttpError::StatusCode(response) => response,
                    HttpError::Client(e) if (e.is_timeout() || e.is_connect()) => {
                        failures += 1;
                        if failures > self.max_retries {
                            return Err(api_err(format!(
                                "{} after {} retries",
                                plain(&e),
                                self.max_retries
                            )));
                        }
                        let wait = BACKOFF * 2u32.pow(failures - 1);
                        tracing::warn!("{endpoint}: {}; retrying in {wait:?}", plain(&e));
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    HttpError::Client(e) => return Err(api_err(plain(&e))),
                },
                other => return Err(api_err(other.to_string())),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = response.text().await.unwrap_or_default();
            let message = error_message(&body);
            match status {
                429 => {
                    rate_limited += 1;
                    let wait = retry_after.unwrap_or(1);
                    if wait > self.max_retry_after || rate_limited > MAX_RATE_LIMITED {
                        return Err(api_err(format!(
                            "rate limited (429): Spotify asks to wait {wait} s, more than lake waits \
                             (`spotify.max_retry_after` = {} s, {MAX_RATE_LIMITED} waits)",
                            self.max_retry_after
                        )));
                    }
                    tracing::warn!(
                        "{endpoint}: rate limited; waiting {wait} s as Retry-After asks"
                    );
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                401 if !refreshed => {
                    refreshed = true;
                    tracing::info!("{endpoint}: 401, refreshing the access token once");
                    self.refresh().await.map_err(|e| ExtractError::Auth {
                        message: format!(
                            "the token was refused and refreshing it failed: {}",
                            token_error(e)
                        ),
                    })?;
                }
                401 => {
                    return Err(ExtractError::Auth {
                        message: format!(
                            "{endpoint} refused a freshly refreshed token (401: {message}); run `lake auth spotify` again"
                        ),
                    });
                }
                403 | 404 => {
                    return Err(ExtractError::Unavailable {
                        endpoint: endpoint.to_string(),
                        status,
                        message,
                    });
                }
                500..=599 => {
                    failures += 1;
                    if failures > self.max_retries {
                        return Err(api_err(format!(
                            "{status} {message} after {} retries",
                            self.max_retries
                        )));
                    }
                    let wait = BACKOFF * 2u32.pow(failures - 1);
                    tracing::warn!("{endpoint}: {status}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(api_err(format!("{status} {message}"))),
            }
        }
    }
}

/// A reqwest error without its source chain's noise; it never holds a token.
fn plain(e: &impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// What a token request failure says, without the request (which carries the secret).
fn token_error(e: ClientError) -> String {
    match e {
        ClientError::Http(http) => match *http {
            HttpError::StatusCode(r) => format!("the accounts service answered {}", r.status()),
            HttpError::Client(e) => plain(&e),
        },
        other => other.to_string(),
    }
}

/// Spotify's `{"error": {"status": 403, "message": "..."}}`, or the body as it is.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/error_description"))
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .map(String::from)
    });
    msg.unwrap_or_else(|| body.chars().take(200).collect())
}

impl From<ClientError> for ExtractError {
    fn from(e: ClientError) -> Self {
        ExtractError::Auth {
            message: token_error(e),
        }
    }
}
