//! Garbage sent straight to the scripts is refused with
//! `ERR spendgate:invalid …` before anything is written; the store maps
//! such replies (and unreadable data) to typed errors.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};
use std::collections::BTreeMap;

use spendgate_adapter_redis::keys::{
    DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY, expiry_bucket_key, expiry_key, hold_digest,
    marker_queue_key, records_key, user_sums_key,
};
use spendgate_adapter_redis::script::Op;
use spendgate_contract::fixture::{hold, key, m, period, unique_community, user};
use spendgate_domain::{ConfigVersion, Limits, Micros, ModelAlias, Reservation, Timestamp, Ttl};
use spendgate_ports::{BudgetStore, StoreError};

use crate::support::{raw_standalone, standalone_redis};

/// 12 bytes, the first one >= 0x80 (`é` is two bytes in UTF-8).
const DIGEST: &str = "é0123456789";

async fn call<K: AsRef<str>>(
    conn: &mut ConnectionManager,
    op: Op,
    keys: &[K],
    args: &[&str],
) -> Result<Value, String> {
    let script = Script::new(op.source());
    let mut invocation = script.prepare_invoke();
    for k in keys {
        invocation.key(k.as_ref());
    }
    for a in args {
        invocation.arg(*a);
    }
    invocation
        .invoke_async::<Value>(conn)
        .await
        .map_err(|e| e.to_string())
}

async fn refused<K: AsRef<str>>(
    conn: &mut ConnectionManager,
    op: Op,
    keys: &[K],
    args: &[&str],
    what: &str,
) {
    let result = call(conn, op, keys, args).await;
    match result {
        Err(e) => assert!(
            e.contains("spendgate:invalid"),
            "{} {args:?} ({what}): wrong error {e}",
            op.name()
        ),
        Ok(v) => panic!("{} {args:?} ({what}) was accepted: {v:?}", op.name()),
    }
}

#[tokio::test]
async fn scripts_refuse_garbage_numbers_ids_and_keys_without_writing() {
    let mut conn = raw_standalone().await;
    let c = unique_community("bad-input");
    let november = period("2026-11");
    let r = [records_key(&c)];
    let ok_limits = call(&mut conn, Op::SetLimits, &r, &["1000", "", "0"]).await;
    assert!(ok_limits.is_ok(), "{ok_limits:?}");
    // The keys of the reserve below: its expiry's bucket and its period.
    let reserve_keys = [
        records_key(&c),
        expiry_key(&c),
        expiry_bucket_key(&c, 17_947_008_600),
        user_sums_key(&c, november),
    ];

    // reserve: digest, user, estimate, model, now, expires, period, percent
    let good = [
        DIGEST,
        "alice",
        "5",
        "cheap",
        "1794700800000",
        "1794700860000",
        "2026-11",
        "80",
    ];
    let bad: &[(usize, &str, &str)] = &[
        (0, "short", "digest length"),
        (0, "0123456789ab", "digest starting with ASCII"),
        (1, "", "empty user"),
        (1, "a b", "user with a space"),
        (2, "-5", "negative estimate"),
        (2, "1.5", "fractional estimate"),
        (2, "1e3", "exponent"),
        (2, "0x10", "hex"),
        (2, "007", "leading zeros"),
        (2, "", "empty estimate"),
        (2, "9007199254740992", "estimate past 2^53 - 1"),
        (2, "99999999999999999999", "estimate past i64"),
        (2, "nan", "nan"),
        (2, "inf", "inf"),
        (3, "", "empty model"),
        (3, "a b", "model with a space"),
        (4, "-1", "negative now"),
        (4, "9223372036854775808", "now past i64"),
        (4, "9007199254740992", "now past 2^53 - 1"),
        (5, "9007199254740993", "expiry past 2^53"),
        (6, "2026-13", "month 13"),
        (6, "2026-00", "month 0"),
        (6, "2026-1", "short period"),
        (6, "../x", "period path"),
        (7, "0", "warning 0 %"),
        (7, "101", "warning 101 %"),
    ];
    for (index, value, what) in bad {
        let mut args = good;
        args[*index] = value;
        refused(&mut conn, Op::Reserve, &reserve_keys, &args, what).await;
    }
    for (first, what) in [
        ("sg:c:r", "key without a tag"),
        ("sg:{a}b}:r", "brace inside the tag"),
        ("sg:{}:r", "empty tag"),
        ("other:{a}:r", "foreign prefix"),
        ("sg:{a b}:r", "space in the tag"),
    ] {
        let mut keys = reserve_keys.clone();
        keys[0] = first.to_owned();
        refused(&mut conn, Op::Reserve, &keys, &good, what).await;
    }
    let other = unique_community("bad-input-other");
    for (index, key, what) in [
        (1, expiry_key(&other), "another community's zset"),
        (
            2,
            expiry_bucket_key(&c, 17_947_008_601),
            "another bucket's list",
        ),
        (
            3,
            user_sums_key(&c, period("2026-10")),
            "another period's users",
        ),
        (
            3,
            user_sums_key(&other, november),
            "another community's users",
        ),
    ] {
        let mut keys = reserve_keys.clone();
        keys[index] = key;
        refused(&mut conn, Op::Reserve, &keys, &good, what).await;
    }
    refused(&mut conn, Op::Reserve, &r, &good, "undeclared keys").await;

    // finalize: digest, actual, now, marker expiry
    let finalize_keys = [records_key(&c), marker_queue_key(&c)];
    let unheld_keys = [
        records_key(&c),
        marker_queue_key(&c),
        user_sums_key(&c, november),
    ];
    for (args, what) in [
        ([DIGEST, "-1", "1", "2"], "negative actual"),
        ([DIGEST, "1.0", "1", "2"], "fractional actual"),
        (
            [DIGEST, "9007199254740992", "1", "2"],
            "actual past 2^53 - 1",
        ),
        ([DIGEST, "1", "x", "2"], "now"),
        ([DIGEST, "1", "1", "-2"], "marker expiry"),
    ] {
        refused(&mut conn, Op::Finalize, &finalize_keys, &args, what).await;
    }
    let foreign_queue = [records_key(&c), marker_queue_key(&other)];
    let args = [DIGEST, "1", "1", "2", "2026-11", "alice"];
    refused(
        &mut conn,
        Op::Finalize,
        &foreign_queue,
        &args,
        "foreign queue",
    )
    .await;
    // commit_unheld: finalize's six arguments and the model alias
    for (args, what) in [
        (
            [DIGEST, "1", "1", "2", "2026-11", "alice", ""],
            "empty model",
        ),
        (
            [DIGEST, "1", "1", "2", "2026-11", "alice", "a b"],
            "model with a space",
        ),
        (
            [DIGEST, "1", "1", "2", "2026-13", "alice", "cheap"],
            "month 13",
        ),
        (
            [DIGEST, "1", "1", "2", "2026-11", "a b", "cheap"],
            "user with a space",
        ),
    ] {
        refused(&mut conn, Op::Finalize, &unheld_keys, &args, what).await;
    }
    let unheld = [DIGEST, "1", "1", "2", "2026-11", "alice", "cheap"];
    refused(
        &mut conn,
        Op::Finalize,
        &finalize_keys,
        &unheld,
        "no user set",
    )
    .await;
    let october_users = [
        records_key(&c),
        marker_queue_key(&c),
        user_sums_key(&c, period("2026-10")),
    ];
    refused(
        &mut conn,
        Op::Finalize,
        &october_users,
        &unheld,
        "another period",
    )
    .await;
    // extend: digest, now, wanted
    let extend_keys = [records_key(&c), expiry_key(&c), expiry_bucket_key(&c, 20)];
    refused(
        &mut conn,
        Op::Extend,
        &extend_keys,
        &[DIGEST, "1", "1e9"],
        "wanted",
    )
    .await;
    let args = [DIGEST, "1", "2100"];
    refused(&mut conn, Op::Extend, &extend_keys, &args, "another bucket").await;
    // reap: now, tombstone expiry, hold batch, marker batch, offset
    let reap_keys = [records_key(&c), expiry_key(&c), marker_queue_key(&c)];
    for (args, what) in [
        (["1", "2", "0", "10", "0"], "hold batch 0"),
        (["1", "2", "10001", "10", "0"], "hold batch too big"),
        (["1", "2", "10", "-1", "0"], "negative marker batch"),
        (["-1", "2", "10", "10", "0"], "negative now"),
        (["1", "2", "10", "10", "-3"], "negative offset"),
    ] {
        refused(&mut conn, Op::Reap, &reap_keys, &args, what).await;
    }
    // reap's due buckets: declared lists, ascending, none above now's.
    let with_buckets = |buckets: &[i64]| {
        let mut keys = reap_keys.to_vec();
        keys.extend(buckets.iter().map(|b| expiry_bucket_key(&c, *b)));
        keys
    };
    for (keys, args, what) in [
        (
            with_buckets(&[5]),
            vec!["1000", "2", "10", "10", "0"],
            "bucket undeclared in ARGV",
        ),
        (
            reap_keys.to_vec(),
            vec!["1000", "2", "10", "10", "0", "5"],
            "bucket without its key",
        ),
        (
            with_buckets(&[6]),
            vec!["1000", "2", "10", "10", "0", "5"],
            "another bucket's list",
        ),
        (
            with_buckets(&[6, 5]),
            vec!["1000", "2", "10", "10", "0", "6", "5"],
            "descending",
        ),
        (
            with_buckets(&[11]),
            vec!["1000", "2", "10", "10", "0", "11"],
            "bucket not due",
        ),
        (
            with_buckets(&[5]),
            vec!["1000", "2", "10", "10", "0", "05"],
            "leading zero",
        ),
    ] {
        refused(&mut conn, Op::Reap, &keys, &args, what).await;
    }
    let status_keys = [records_key(&c)];
    refused(
        &mut conn,
        Op::Status,
        &status_keys,
        &["2026-13"],
        "status period",
    )
    .await;
    refused(
        &mut conn,
        Op::Status,
        &status_keys,
        &["2026-11", "a b"],
        "status user with a space",
    )
    .await;
    let users_keys = [records_key(&c), user_sums_key(&c, november)];
    for (args, what) in [
        (["2026-11", "x", "10"], "cursor"),
        (["2026-11", "-1", "10"], "negative cursor"),
        (["2026-11", "0", "0"], "page size 0"),
        (["2026-11", "0", "1001"], "page size past 1000"),
        (["2026-11", "0", "1.5"], "fractional page size"),
        (["2026-10", "0", "10"], "another period's user set"),
    ] {
        refused(&mut conn, Op::Users, &users_keys, &args, what).await;
    }
    for (args, what) in [
        (["-5", "", "0"], "negative limit"),
        (["1e9", "", "0"], "exponent limit"),
        (["100", "-1", "0"], "negative cap"),
        (["9007199254740992", "", "0"], "limit past 2^53 - 1"),
        (["100", "", ""], "no limits version"),
        (["100", "", "-1"], "negative limits version"),
        (["100", "", "1.5"], "fractional limits version"),
        (
            ["100", "", "9007199254740992"],
            "limits version past 2^53 - 1",
        ),
    ] {
        refused(&mut conn, Op::SetLimits, &r, &args, what).await;
    }

    // restore_committed: period, then user / committed pairs
    let restore_keys = [records_key(&c), user_sums_key(&c, november)];
    for (args, what) in [
        (&["2026-13"][..], "restore period"),
        (&["2026-11", "alice"][..], "user without an amount"),
        (&["2026-11", "a b", "1"][..], "user with a space"),
        (&["2026-11", "", "1"][..], "empty user"),
        (&["2026-11", "alice", "-1"][..], "negative committed"),
        (&["2026-11", "alice", "1e3"][..], "exponent committed"),
        (&["2026-11", "alice", "1", "alice", "2"][..], "user twice"),
        (
            &["2026-11", "alice", "1", "bob", "x"][..],
            "bad last amount",
        ),
    ] {
        refused(&mut conn, Op::RestoreCommitted, &restore_keys, args, what).await;
    }
    let args = ["2026-10", "alice", "1"];
    refused(
        &mut conn,
        Op::RestoreCommitted,
        &restore_keys,
        &args,
        "another period",
    )
    .await;

    // Nothing but the limits, their version and the layout header
    // set_limits stamps was ever written for this community.
    let limits: String = conn.hget(records_key(&c), "L").await.unwrap();
    assert_eq!(limits, "1000");
    let version: String = conn.hget(records_key(&c), "LV").await.unwrap();
    assert_eq!(version, "0");
    let header: String = conn.hget(records_key(&c), "V").await.unwrap();
    assert_eq!(header, "1");
    let fields: i64 = conn.hlen(records_key(&c)).await.unwrap();
    assert_eq!(fields, 3);
    for k in [
        expiry_key(&c),
        marker_queue_key(&c),
        user_sums_key(&c, november),
        expiry_bucket_key(&c, 17_947_008_600),
    ] {
        let exists: bool = conn.exists(&k).await.unwrap();
        assert!(!exists, "{k} was written");
    }
}

async fn call_due(
    conn: &mut ConnectionManager,
    op: Op,
    keys: [&str; 3],
    args: &[&str],
) -> Result<Value, String> {
    let script = Script::new(op.source());
    let mut invocation = script.prepare_invoke();
    for k in keys {
        invocation.key(k);
    }
    for a in args {
        invocation.arg(*a);
    }
    invocation
        .invoke_async::<Value>(conn)
        .await
        .map_err(|e| e.to_string())
}

/// The due index's scripts take exactly their three `{due}` keys, a
/// community id by the id rules and canonical numbers.
#[tokio::test]
async fn due_index_scripts_refuse_other_keys_and_bad_ids() {
    let mut conn = raw_standalone().await;
    let c = unique_community("bad-due");
    let keys = [DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY];
    let long = "c".repeat(129);
    let cases: Vec<(Op, [&str; 3], Vec<&str>, &str)> = vec![
        (
            Op::DueTouch,
            ["sg:{x}:at", DUE_GEN_KEY, DUE_SEQ_KEY],
            vec![c.as_str(), "100"],
            "foreign keys",
        ),
        (
            Op::DueTouch,
            [DUE_AT_KEY, DUE_SEQ_KEY, DUE_GEN_KEY],
            vec![c.as_str(), "100"],
            "keys out of order",
        ),
        (Op::DueTouch, keys, vec!["a{b", "100"], "brace in the id"),
        (Op::DueTouch, keys, vec!["a b", "100"], "space in the id"),
        (Op::DueTouch, keys, vec!["", "100"], "empty id"),
        (
            Op::DueTouch,
            keys,
            vec![long.as_str(), "100"],
            "id too long",
        ),
        (Op::DueTouch, keys, vec![c.as_str(), "-1"], "negative bound"),
        (
            Op::DueTouch,
            keys,
            vec![c.as_str(), "1e3"],
            "exponent bound",
        ),
        (
            Op::DueUpdate,
            keys,
            vec![c.as_str(), "x", "100"],
            "generation",
        ),
        (
            Op::DueUpdate,
            keys,
            vec![c.as_str(), "", "1.5"],
            "fractional bound",
        ),
        (
            Op::DueUpdate,
            keys,
            vec!["a}b", "", "100"],
            "brace in the id",
        ),
        (
            Op::DueUpdate,
            [DUE_AT_KEY, DUE_GEN_KEY, "sg:{due}:other"],
            vec![c.as_str(), "", "100"],
            "foreign key",
        ),
    ];
    for (op, keys, args, what) in cases {
        match call_due(&mut conn, op, keys, &args).await {
            Err(e) => assert!(
                e.contains("spendgate:invalid"),
                "{} ({what}): {e}",
                op.name()
            ),
            Ok(v) => panic!("{} ({what}) was accepted: {v:?}", op.name()),
        }
    }
    let score: Option<i64> = conn.zscore(DUE_AT_KEY, c.as_str()).await.unwrap();
    assert_eq!(score, None);
    let generation: Option<String> = conn.hget(DUE_GEN_KEY, c.as_str()).await.unwrap();
    assert_eq!(generation, None);
}

/// The adapter reads every script reply as an array; a due touch that
/// answered otherwise was logged as a failed index update after every
/// reserve that made it.
#[tokio::test]
async fn a_due_touch_replies_with_an_array_like_every_script() {
    let mut conn = raw_standalone().await;
    let c = unique_community("due-touch-reply");
    let keys = [DUE_AT_KEY, DUE_GEN_KEY, DUE_SEQ_KEY];

    let reply = call_due(&mut conn, Op::DueTouch, keys, &[c.as_str(), "100"])
        .await
        .unwrap();

    assert!(
        matches!(&reply, Value::Array(items) if matches!(items.as_slice(), [Value::Int(_)])),
        "{reply:?}"
    );
}

/// restore_committed checks every stored user's sums before its first
/// write: one unreadable entry refuses the whole restore.
#[tokio::test]
async fn restore_over_unreadable_sums_changes_nothing() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("restore-corrupt");
    store
        .set_limits(&c, Limits::new(m(1_000)), ConfigVersion::ZERO)
        .await
        .unwrap();
    let now = Timestamp::from_millis(1_794_700_800_000).unwrap();
    let r = Reservation {
        user: user("alice"),
        key: key("k"),
        estimate: m(5),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(1_000).unwrap(),
    };
    store.reserve(&c, &r, now).await.unwrap();
    let p = period("2026-11");
    let _: () = conn.sadd(user_sums_key(&c, p), "mallory").await.unwrap();
    let _: () = conn
        .hset(records_key(&c), "2026-11:mallory", "garbage")
        .await
        .unwrap();
    let before: Vec<(Vec<u8>, Vec<u8>)> = conn.hgetall(records_key(&c)).await.unwrap();
    let restored: BTreeMap<_, _> = [(user("alice"), m(40))].into_iter().collect();
    let result = store.restore_committed(&c, p, &restored).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    let after: Vec<(Vec<u8>, Vec<u8>)> = conn.hgetall(records_key(&c)).await.unwrap();
    assert_eq!(before, after);

    // An amount past the range is refused before anything is sent.
    let huge: BTreeMap<_, _> = [(user("alice"), Micros::MAX), (user("bob"), m(1))]
        .into_iter()
        .collect();
    assert!(matches!(
        store.restore_committed(&c, p, &huge).await,
        Err(StoreError::Overflow(_))
    ));
}

/// A record lookup cannot read is corrupt, not a panic and not "unknown".
#[tokio::test]
async fn lookup_of_an_unreadable_record_is_corrupt() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("lookup-corrupt");
    let digest = hold_digest(&user("alice"), &key("k"));
    let _: () = conn
        .hset(records_key(&c), &digest[..], "H1 2 3")
        .await
        .unwrap();
    let now = Timestamp::from_millis(1_794_700_800_000).unwrap();
    let result = store.lookup(&c, &hold("alice", "k"), now).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

#[tokio::test]
async fn unreadable_stored_data_is_corrupt_not_a_panic() {
    let store = standalone_redis().await;
    let mut conn = raw_standalone().await;
    let c = unique_community("corrupt");
    let _: () = conn.hset(records_key(&c), "L", "lots").await.unwrap();
    let r = Reservation {
        user: user("alice"),
        key: key("k"),
        estimate: m(5),
        model: ModelAlias::parse("cheap").unwrap(),
        ttl: Ttl::from_millis(1_000).unwrap(),
    };
    let now = Timestamp::from_millis(1_794_700_800_000).unwrap();
    let result = store.reserve(&c, &r, now).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}
