//! `lake auth spotify`: the listener's consent, once; the refresh token is kept for
//! `lake extract spotify`.

use std::time::Duration;

use anyhow::Result;

use super::Context;
use crate::cli::{AuthArgs, AuthService};
use crate::extract::spotify::auth;

pub async fn run(ctx: &Context, args: AuthArgs) -> Result<()> {
    let AuthService::Spotify(args) = args.service;
    let settings = ctx.settings()?;
    let path = auth::authorize(&settings, Duration::from_secs(args.timeout), |url| {
        eprintln!("Open this address in a browser and allow access:\n\n  {url}\n");
        eprintln!("Waiting for Spotify to redirect back...");
    })
    .await?;
    if !ctx.quiet() {
        eprintln!("authorized; token saved to {} (mode 0600)", path.display());
    }
    Ok(())
}
