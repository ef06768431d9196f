//! `lake auth spotify`: the authorization-code flow with PKCE. No client secret is involved;
//! the code comes back to a one-shot listener on the loopback redirect URI, and the token
//! (with its refresh token) goes to the token file with mode 0600.

use std::path::PathBuf;
use std::time::Duration;

use rspotify::clients::OAuthClient;
use rspotify::{AuthCodePkceSpotify, Credentials, OAuth};

use super::api::{DEFAULT_REDIRECT_URI, SCOPES, client_id, rspotify_config};
use super::token;
use crate::config::Settings;
use crate::extract::ExtractError;

/// Runs the flow: `show_url` gets the address to open in a browser; the callback is awaited
/// for at most `wait`. Returns the token file written.
pub async fn authorize(
    settings: &Settings,
    wait: Duration,
    show_url: impl FnOnce(&str),
) -> Result<PathBuf, ExtractError> {
    let id = client_id(&settings.spotify)?;
    let redirect = settings
        .spotify
        .redirect_uri
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIRECT_URI.into());
    let oauth = OAuth {
        redirect_uri: redirect.clone(),
        scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
        ..OAuth::default()
    };
    let mut client = AuthCodePkceSpotify::with_config(
        Credentials::new_pkce(&id),
        oauth,
        rspotify_config(&settings.spotify),
    );
    let url = client.get_authorize_url(None)?;
    let addr = url::Url::parse(&redirect)
        .ok()
        .filter(|u| u.scheme() == "http" && u.port().is_some())
        .and_then(|_| client.get_socket_address(&redirect))
        .filter(|a| a.ip().is_loopback())
        .ok_or_else(|| ExtractError::Config {
            message: format!(
                "redirect URI {redirect} must be http on a loopback address with a port, such as \
                 {DEFAULT_REDIRECT_URI}, and registered for the app"
            ),
        })?;
    show_url(&url);
    let listener = client.clone();
    let code = tokio::time::timeout(
        wait,
        tokio::task::spawn_blocking(move || listener.get_authcode_listener(addr)),
    )
    .await
    .map_err(|_| ExtractError::Auth {
        message: format!("no callback reached {redirect} within {} s", wait.as_secs()),
    })?
    .map_err(|e| ExtractError::Auth {
        message: format!("the callback listener stopped: {e}"),
    })?
    .map_err(|e| ExtractError::Auth {
        message: match e {
            rspotify::ClientError::AuthCodeListenerParse(_) => {
                "the callback had no code, or its state did not match".into()
            }
            other => other.to_string(),
        },
    })?;
    client.request_token(&code).await?;
    let token = client
        .token
        .lock()
        .await
        .expect("token lock")
        .clone()
        .ok_or_else(|| ExtractError::Auth {
            message: "the accounts service returned no token".into(),
        })?;
    if token.refresh_token.is_none() {
        return Err(ExtractError::Auth {
            message: "the accounts service returned no refresh token".into(),
        });
    }
    let path = token::path(settings);
    token::write(&path, &token)?;
    Ok(path)
}
