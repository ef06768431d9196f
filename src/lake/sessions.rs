//! The one place DataFusion sessions are made. Every session lake opens (`query`, `shell`, a
//! model's inputs, a test, the export's reads, extract's anti-joins) comes from the lake's
//! [`Sessions`], so what they share (UTC time functions, source positions in errors, and the
//! memory and spilling a later setting gives them) is decided here once.

use datafusion::prelude::{SessionConfig, SessionContext};

/// Makes the lake's DataFusion sessions.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    _private: (),
}

impl Sessions {
    /// A fresh session: UTC time functions registered, source positions kept for error
    /// messages, `information_schema` on when `catalog` is set (for `lake query` and `shell`).
    pub fn context(&self, catalog: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_information_schema(catalog);
        config.options_mut().sql_parser.collect_spans = true;
        let ctx = SessionContext::new_with_config(config);
        crate::query::utc::register(&ctx);
        ctx
    }
}
