//! The JSON values of the policy trees (the cache, the pins): decoded
//! strictly (a value that does not decode is corrupt, never a missing
//! entry) and written durably (a fetched policy or an operator's pin must
//! survive a crash).

use portcullis_store::{Store, StoreError, Tree};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StsError;

/// A stored JSON value of `tree` (the policy cache, the pins), decoded; a
/// value that does not decode is [`StoreError::Corrupt`], never a missing
/// entry.
pub(crate) fn decode_stored<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StsError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StsError::Store(StoreError::Corrupt {
            tree,
            reason: e.to_string(),
        })
    })
}

/// Writes `value` as JSON under `key` in `tree` (named `name`) and returns
/// once it is on disk (the policy cache and the pins are acknowledgement
/// points: an operator's `policy pin` or a fetched policy must survive a
/// crash).
pub(crate) async fn put_stored<T: Serialize>(
    store: &Store,
    tree: &Tree,
    name: &'static str,
    key: &str,
    value: &T,
) -> Result<(), StsError> {
    let json = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        tree: name,
        reason: e.to_string(),
    })?;
    tree.insert(key, json).map_err(StoreError::from)?;
    store.commit().await?;
    Ok(())
}

/// Removes `key` from `tree`, on disk when this returns; true if it was
/// there.
pub(crate) async fn remove_stored(store: &Store, tree: &Tree, key: &str) -> Result<bool, StsError> {
    let removed = tree.remove(key).map_err(StoreError::from)?.is_some();
    if removed {
        store.commit().await?;
    }
    Ok(removed)
}
