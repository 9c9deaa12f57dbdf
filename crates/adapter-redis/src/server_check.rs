//! What the budget store checks of a server before it uses it: an eviction
//! policy that never drops a record, and its scripts loaded on every
//! master.
//!
//! The record hash of a community carries no TTL; a server whose
//! `maxmemory-policy` may evict keys without one (`allkeys-*`) would, when
//! full, silently wipe a community's holds and totals. `noeviction` (the
//! server refuses writes when full: reserves are denied, which is
//! fail-closed) and `volatile-*` (only keys with a TTL, which the store
//! never relies on keeping) are safe.

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, FromRedisValue, Value};

use crate::connection::ConnectError;
use crate::script::Op;

/// The setting the check reads, as operators write it.
pub const EVICTION_SETTING: &str = "maxmemory-policy";

/// Whether `policy` can never evict a key without a TTL.
fn keeps_untimed_keys(policy: &str) -> bool {
    policy == "noeviction" || policy.starts_with("volatile-")
}

/// The `maxmemory_policy` line of an `INFO memory` reply.
fn policy_in_info(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix("maxmemory_policy:"))
}

/// Refuses a node whose `INFO memory` names an evicting policy (or none).
///
/// # Errors
/// [`ConnectError::InvalidInput`] naming the setting, the node and the
/// policies that are accepted.
fn check_info(node: &str, info: &str) -> Result<(), ConnectError> {
    match policy_in_info(info) {
        Some(policy) if keeps_untimed_keys(policy) => Ok(()),
        Some(policy) => Err(ConnectError::InvalidInput(format!(
            "redis {EVICTION_SETTING} is {policy} on {node}: it can evict a community's budget \
             record, which has no TTL; set {EVICTION_SETTING} to noeviction (or a volatile-* policy)"
        ))),
        None => Err(ConnectError::InvalidInput(format!(
            "redis {node} does not report its {EVICTION_SETTING} in INFO memory; \
             cannot tell whether it may evict budget records"
        ))),
    }
}

fn unavailable(what: &str, error: &impl std::fmt::Display) -> ConnectError {
    ConnectError::Unavailable(format!("{what}: {error}"))
}

fn info_memory() -> Cmd {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("memory");
    cmd
}

fn script_load(op: Op) -> Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(op.source());
    cmd
}

/// Checks a standalone server and loads every script on it.
///
/// # Errors
/// [`ConnectError::InvalidInput`] for an evicting policy;
/// [`ConnectError::Unavailable`] when the server does not answer.
pub(crate) async fn prepare_standalone(conn: &mut ConnectionManager) -> Result<(), ConnectError> {
    let info: String = info_memory()
        .query_async(conn)
        .await
        .map_err(|e| unavailable("INFO memory", &e))?;
    check_info("the server", &info)?;
    for op in Op::ALL {
        let _: Value = script_load(op)
            .query_async(conn)
            .await
            .map_err(|e| unavailable(&format!("loading the {} script", op.name()), &e))?;
    }
    Ok(())
}

/// Checks every master of the cluster and loads every script on each.
///
/// # Errors
/// As [`prepare_standalone`], naming the node at fault.
pub(crate) async fn prepare_cluster(conn: &mut ClusterConnection) -> Result<(), ConnectError> {
    let reply = conn
        .route_command(
            info_memory(),
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
        )
        .await
        .map_err(|e| unavailable("INFO memory on every master", &e))?;
    let Value::Map(per_node) = reply else {
        return Err(ConnectError::Unavailable(format!(
            "INFO memory on every master: unexpected reply {reply:?}"
        )));
    };
    for (node, info) in per_node {
        let node = String::from_redis_value(node).unwrap_or_else(|_| "a master".to_owned());
        let info = String::from_redis_value(info)
            .map_err(|e| unavailable(&format!("INFO memory on {node}"), &e))?;
        check_info(&node, &info)?;
    }
    for op in Op::ALL {
        conn.route_command(
            script_load(op),
            RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::AllSucceeded),
            )),
        )
        .await
        .map_err(|e| {
            unavailable(
                &format!("loading the {} script on every master", op.name()),
                &e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(policy: &str) -> String {
        format!(
            "# Memory\r\nused_memory:1024\r\nmaxmemory_policy:{policy}\r\nmem_allocator:jemalloc\r\n"
        )
    }

    #[test]
    fn policies_that_keep_untimed_keys_pass() {
        for policy in [
            "noeviction",
            "volatile-lru",
            "volatile-lfu",
            "volatile-ttl",
            "volatile-random",
        ] {
            assert_eq!(check_info("n", &info(policy)), Ok(()), "{policy}");
        }
    }

    #[test]
    fn evicting_policies_are_refused_naming_the_setting_and_node() {
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "something-new",
        ] {
            let Err(ConnectError::InvalidInput(message)) =
                check_info("10.0.0.7:6379", &info(policy))
            else {
                panic!("{policy} was accepted");
            };
            assert!(message.contains("maxmemory-policy"), "{message}");
            assert!(message.contains(policy), "{message}");
            assert!(message.contains("10.0.0.7:6379"), "{message}");
        }
    }

    #[test]
    fn a_reply_without_the_policy_is_refused() {
        assert!(matches!(
            check_info("n", "# Memory\r\nused_memory:1\r\n"),
            Err(ConnectError::InvalidInput(_))
        ));
    }
}
