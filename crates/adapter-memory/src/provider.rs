//! A provider usage endpoint answered from memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use spendgate_domain::CallId;
use spendgate_ports::{ProviderError, ProviderUsage, UsageSource};

/// A [`UsageSource`] that knows the calls it was told about; unknown calls
/// answer `None`, like the provider's 404.
#[derive(Debug, Default)]
pub struct MemoryUsageSource {
    usage: Mutex<BTreeMap<CallId, ProviderUsage>>,
}

impl MemoryUsageSource {
    /// Records what the provider will report for the call `call`.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] if the lock was poisoned.
    pub fn record(&self, call: CallId, usage: ProviderUsage) -> Result<(), ProviderError> {
        let mut map = self.usage.lock().map_err(|_| poisoned())?;
        map.insert(call, usage);
        Ok(())
    }
}

fn poisoned() -> ProviderError {
    ProviderError::Unavailable("memory usage source lock poisoned".into())
}

#[async_trait]
impl UsageSource for MemoryUsageSource {
    async fn usage(&self, call: &CallId) -> Result<Option<ProviderUsage>, ProviderError> {
        let map = self.usage.lock().map_err(|_| poisoned())?;
        Ok(map.get(call).cloned())
    }
}
