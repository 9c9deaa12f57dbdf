//! A provider usage endpoint answered from memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use spendgate_domain::IdempotencyKey;
use spendgate_ports::{ProviderError, ProviderUsage, UsageSource};

/// A [`UsageSource`] that knows the calls it was told about; unknown keys
/// answer `None`, like the provider's 404.
#[derive(Debug, Default)]
pub struct MemoryUsageSource {
    usage: Mutex<BTreeMap<IdempotencyKey, ProviderUsage>>,
}

impl MemoryUsageSource {
    /// Records what the provider will report for `key`.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] if the lock was poisoned.
    pub fn record(&self, key: IdempotencyKey, usage: ProviderUsage) -> Result<(), ProviderError> {
        let mut map = self.usage.lock().map_err(|_| poisoned())?;
        map.insert(key, usage);
        Ok(())
    }
}

fn poisoned() -> ProviderError {
    ProviderError::Unavailable("memory usage source lock poisoned".into())
}

#[async_trait]
impl UsageSource for MemoryUsageSource {
    async fn usage(&self, key: &IdempotencyKey) -> Result<Option<ProviderUsage>, ProviderError> {
        let map = self.usage.lock().map_err(|_| poisoned())?;
        Ok(map.get(key).cloned())
    }
}
