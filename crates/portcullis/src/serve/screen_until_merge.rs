//! LEAD: delete this file at merge. The admin branch needs a `Screen` for
//! `screen show|clear` before the inbound branch builds the real one (on
//! `SledScreenStore`, handed to `Inbound`, replaced by reloads); then
//! `serve` gives the handler `ScreenAccess::new(move || inbound.screen())`.

use portcullis_config::Config;
use portcullis_screen::state::{ScreenStore, StateError, Stored, Table};
use portcullis_screen::{BoxFuture, Screen, ScreenBuilder};
use std::sync::Arc;

/// The skeleton's screen over a store that holds nothing.
pub fn screen(config: &Config) -> anyhow::Result<Screen> {
    ScreenBuilder::new(Arc::new(Nothing))
        .build(config)
        .map_err(|e| anyhow::anyhow!("building the screen: {e}"))
}

/// Holds nothing: every read is empty, every write is dropped.
struct Nothing;

impl ScreenStore for Nothing {
    fn get<'a>(
        &'a self,
        _: Table,
        _: &'a [u8],
        _: u64,
    ) -> BoxFuture<'a, Result<Option<Stored>, StateError>> {
        Box::pin(async { Ok(None) })
    }
    fn put<'a>(
        &'a self,
        _: Table,
        _: &'a [u8],
        _: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async { Ok(()) })
    }
    fn scan_prefix<'a>(
        &'a self,
        _: Table,
        _: &'a [u8],
        _: u64,
        _: usize,
    ) -> BoxFuture<'a, Result<Vec<(Vec<u8>, Stored)>, StateError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn remove_prefix<'a>(
        &'a self,
        _: Table,
        _: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async { Ok(0) })
    }
    fn sweep(&self, _: u64) -> BoxFuture<'_, Result<u64, StateError>> {
        Box::pin(async { Ok(0) })
    }
}
