//! One PL/pgSQL function per write of the budget store, so that each
//! operation is one statement and one round trip on PostgreSQL (issue 8):
//! `spendgate_budget_reserve`, `spendgate_budget_settle` (finalize,
//! cancel, a late finalize after reap, a commit without a hold),
//! `spendgate_budget_extend`, `spendgate_budget_reap` (one bounded batch)
//! and `spendgate_budget_set_limits`.
//!
//! Each function first takes the community's row lock through
//! `spendgate_budget_lookup` (migration `m20261128_000009`, which also sets
//! the transaction's `lock_timeout` and `statement_timeout`), so every
//! read of a hold, a marker or a counter is a later statement with a
//! snapshot taken under the lock. It then applies the same rules as
//! `spendgate_domain::CommunityBudget` (the contract suite, the property
//! test and the race section hold the two to the same behaviour), writes,
//! and returns the outcome as one row. The lock is held for the length of
//! one statement.
//!
//! Arithmetic is checked as in Rust, never clamped: a sum past
//! `Micros::MAX` or a counter that would go negative raises SQLSTATE
//! [`OVERFLOW_SQLSTATE`]; a stored value the domain would refuse (an
//! amount, count, time, period or model out of range) raises
//! [`CORRUPT_SQLSTATE`] before anything is written. The store maps them to
//! `StoreError::Overflow` and `StoreError::Corrupt`.
//!
//! PostgreSQL only; on SQLite the migration does nothing (its writes stay
//! one Rust transaction under `BEGIN IMMEDIATE`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// SQLSTATE of checked arithmetic that fails (`StoreError::Overflow`).
pub(crate) const OVERFLOW_SQLSTATE: &str = "SG001";

/// SQLSTATE of a stored value out of the domain's range
/// (`StoreError::Corrupt`).
pub(crate) const CORRUPT_SQLSTATE: &str = "SG002";

/// The checks every function shares: amounts are `0..=Micros::MAX`
/// (2^53 - 1), times `0..=Timestamp::MAX`, periods `1970-01..=9999-12`,
/// model aliases 1–64 printable ASCII characters without braces.
const CHECKS: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_corrupt(p_what TEXT, p_value TEXT) RETURNS VOID
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    RAISE EXCEPTION '%: % is out of range', p_what, coalesce(p_value, 'NULL')
        USING ERRCODE = 'SG002';
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_micros(p_what TEXT, p_value BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_value IS NULL OR p_value < 0 OR p_value > 9007199254740991 THEN
        PERFORM spendgate_budget_corrupt(p_what, p_value::TEXT);
    END IF;
    RETURN p_value;
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_count(p_what TEXT, p_value BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_value IS NULL OR p_value < 0 THEN
        PERFORM spendgate_budget_corrupt(p_what, p_value::TEXT);
    END IF;
    RETURN p_value;
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_time(p_what TEXT, p_value BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_value IS NULL OR p_value < 0 OR p_value > 253402300799999 THEN
        PERFORM spendgate_budget_corrupt(p_what, p_value::TEXT);
    END IF;
    RETURN p_value;
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_check_hold(
    p_what TEXT, p_estimate BIGINT, p_model TEXT, p_period TEXT, p_created BIGINT,
    p_expires BIGINT) RETURNS VOID
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    PERFORM spendgate_budget_micros(p_what || ' estimate', p_estimate);
    IF p_model IS NULL OR p_model !~ '^[!-z|~]{1,64}$' THEN
        PERFORM spendgate_budget_corrupt(p_what || ' model', p_model);
    END IF;
    IF p_period IS NULL OR p_period !~ '^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$' THEN
        PERFORM spendgate_budget_corrupt(p_what || ' period', p_period);
    END IF;
    PERFORM spendgate_budget_time(p_what || ' created_at', p_created);
    PERFORM spendgate_budget_time(p_what || ' expires_at', p_expires);
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_add(p_what TEXT, p_a BIGINT, p_b BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_a + p_b > 9007199254740991 THEN
        RAISE EXCEPTION '%: % + % overflows the micro-USD range', p_what, p_a, p_b
            USING ERRCODE = 'SG001';
    END IF;
    RETURN p_a + p_b;
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_sub(p_what TEXT, p_a BIGINT, p_b BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_b > p_a THEN
        RAISE EXCEPTION '%: % - % is negative', p_what, p_a, p_b USING ERRCODE = 'SG001';
    END IF;
    RETURN p_a - p_b;
END
$fn$;

CREATE OR REPLACE FUNCTION spendgate_budget_check_found(
    p_limit BIGINT, p_cap BIGINT,
    h_estimate BIGINT, h_model TEXT, h_period TEXT, h_created BIGINT, h_expires BIGINT,
    m_kind TEXT, m_actual BIGINT, m_estimate BIGINT, m_model TEXT, m_period TEXT,
    m_created BIGINT, m_hold_expires BIGINT) RETURNS VOID
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_limit IS NOT NULL THEN
        PERFORM spendgate_budget_micros('limit', p_limit);
        IF p_cap IS NOT NULL THEN
            PERFORM spendgate_budget_micros('per-user cap', p_cap);
        END IF;
    END IF;
    IF h_estimate IS NOT NULL THEN
        PERFORM spendgate_budget_check_hold('hold', h_estimate, h_model, h_period, h_created,
            h_expires);
    END IF;
    IF m_kind = 'finalized' THEN
        PERFORM spendgate_budget_micros('marker actual', m_actual);
    ELSIF m_kind = 'reaped' THEN
        PERFORM spendgate_budget_check_hold('tombstone', m_estimate, m_model, m_period,
            m_created, m_hold_expires);
    ELSIF m_kind IS NOT NULL THEN
        PERFORM spendgate_budget_corrupt('marker kind', m_kind);
    END IF;
END
$fn$;

-- A period's totals, checked; zeros when the period has none yet.
CREATE OR REPLACE FUNCTION spendgate_budget_read_totals(p_community TEXT, p_period TEXT,
    OUT o_committed BIGINT, OUT o_reserved BIGINT, OUT o_holds BIGINT, OUT o_warned BOOLEAN)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    SELECT p.committed_micros, p.reserved_micros, p.holds, p.warned
        INTO o_committed, o_reserved, o_holds, o_warned
        FROM budget_period p WHERE p.community_id = p_community AND p.period = p_period;
    IF NOT FOUND THEN
        o_committed := 0; o_reserved := 0; o_holds := 0; o_warned := FALSE;
    END IF;
    PERFORM spendgate_budget_micros('committed', o_committed),
            spendgate_budget_micros('reserved', o_reserved),
            spendgate_budget_count('holds', o_holds);
END
$fn$;

-- A user's sums in a period, checked; zeros when the user has none yet.
CREATE OR REPLACE FUNCTION spendgate_budget_read_user(p_community TEXT, p_period TEXT,
    p_user TEXT, OUT o_committed BIGINT, OUT o_reserved BIGINT)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    SELECT u.committed_micros, u.reserved_micros INTO o_committed, o_reserved
        FROM budget_user_period u
        WHERE u.community_id = p_community AND u.period = p_period AND u.user_id = p_user;
    IF NOT FOUND THEN
        o_committed := 0; o_reserved := 0;
    END IF;
    PERFORM spendgate_budget_micros('user committed', o_committed),
            spendgate_budget_micros('user reserved', o_reserved);
END
$fn$;

-- Writes a period's totals (inserted on the period's first write).
CREATE OR REPLACE FUNCTION spendgate_budget_write_totals(p_community TEXT, p_period TEXT,
    p_committed BIGINT, p_reserved BIGINT, p_holds BIGINT, p_warned BOOLEAN) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    INSERT INTO budget_period (community_id, period, committed_micros, reserved_micros, holds, warned)
        VALUES (p_community, p_period, p_committed, p_reserved, p_holds, p_warned)
        ON CONFLICT (community_id, period) DO UPDATE SET
            committed_micros = excluded.committed_micros,
            reserved_micros = excluded.reserved_micros,
            holds = excluded.holds, warned = excluded.warned;
END
$fn$;
"#;

/// Writes a user's sums in a period (inserted on the user's first write).
/// Its own statement so that a later migration can replace it and its
/// `down` put this one back.
pub(crate) const WRITE_USER: &str = r#"
-- Writes a user's sums in a period (inserted on the user's first write).
CREATE OR REPLACE FUNCTION spendgate_budget_write_user(p_community TEXT, p_period TEXT,
    p_user TEXT, p_committed BIGINT, p_reserved BIGINT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    INSERT INTO budget_user_period (community_id, period, user_id, committed_micros, reserved_micros)
        VALUES (p_community, p_period, p_user, p_committed, p_reserved)
        ON CONFLICT (community_id, period, user_id) DO UPDATE SET
            committed_micros = excluded.committed_micros, reserved_micros = excluded.reserved_micros;
END
$fn$;
"#;

/// `reserve`: the admission rule of `spendgate_domain::admit` (community
/// limit, then the user's cap, then the once-per-period warning), the
/// hold count, and the writes of a new hold. `p_period` and `p_expires`
/// come from the caller's `now`, computed in Rust.
const RESERVE: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_reserve(
    p_community TEXT, p_user TEXT, p_key TEXT, p_estimate BIGINT, p_model TEXT,
    p_period TEXT, p_now BIGINT, p_expires BIGINT, p_warning_percent INTEGER,
    p_lock_timeout TEXT, p_statement_timeout TEXT)
RETURNS TABLE (
    outcome TEXT, o_limit BIGINT, o_remaining BIGINT, o_warning BOOLEAN, o_user_scope BOOLEAN,
    h_estimate BIGINT, h_model TEXT, h_period TEXT, h_created BIGINT, h_expires BIGINT)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    f RECORD;
    v_committed BIGINT; v_reserved BIGINT; v_holds BIGINT; v_warned BOOLEAN;
    u_committed BIGINT; u_reserved BIGINT;
    v_used BIGINT; v_user_used BIGINT; v_after BIGINT;
BEGIN
    SELECT * INTO f FROM spendgate_budget_lookup(p_community, p_user, p_key, p_now, FALSE,
        p_lock_timeout, p_statement_timeout);
    IF NOT FOUND THEN
        outcome := 'not_configured';
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM spendgate_budget_check_found(f.limit_micros, f.per_user_cap_micros,
        f.h_estimate, f.h_model, f.h_period, f.h_created, f.h_expires, f.m_kind, f.m_actual,
        f.m_estimate, f.m_model, f.m_period, f.m_created, f.m_hold_expires);
    IF f.h_estimate IS NOT NULL THEN
        outcome := 'already_reserved';
        h_estimate := f.h_estimate; h_model := f.h_model; h_period := f.h_period;
        h_created := f.h_created; h_expires := f.h_expires;
        RETURN NEXT;
        RETURN;
    END IF;
    IF f.m_kind IS NOT NULL THEN
        outcome := 'already_settled';
        RETURN NEXT;
        RETURN;
    END IF;
    IF f.limit_micros IS NULL THEN
        outcome := 'not_configured';
        RETURN NEXT;
        RETURN;
    END IF;
    -- NULL period and expiry: `now` or `now + ttl` is past the time range,
    -- refused only here, after the replay and configuration answers, as
    -- the model refuses it.
    IF p_period IS NULL OR p_expires IS NULL THEN
        outcome := 'time_out_of_range';
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO v_committed, v_reserved, v_holds, v_warned
        FROM spendgate_budget_read_totals(p_community, p_period);
    SELECT * INTO u_committed, u_reserved
        FROM spendgate_budget_read_user(p_community, p_period, p_user);

    v_used := spendgate_budget_add('committed + reserved', v_committed, v_reserved);
    IF v_used + p_estimate > f.limit_micros THEN
        outcome := 'exceeded'; o_user_scope := FALSE; o_limit := f.limit_micros;
        o_remaining := GREATEST(f.limit_micros - v_used, 0);
        RETURN NEXT;
        RETURN;
    END IF;
    IF f.per_user_cap_micros IS NOT NULL THEN
        v_user_used := spendgate_budget_add('user committed + reserved', u_committed, u_reserved);
        IF v_user_used + p_estimate > f.per_user_cap_micros THEN
            outcome := 'exceeded'; o_user_scope := TRUE; o_limit := f.per_user_cap_micros;
            o_remaining := GREATEST(f.per_user_cap_micros - v_user_used, 0);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    v_after := spendgate_budget_add('used + estimate', v_used, p_estimate);
    v_reserved := spendgate_budget_add('reserved', v_reserved, p_estimate);
    u_reserved := spendgate_budget_add('user reserved', u_reserved, p_estimate);
    o_warning := NOT v_warned
        AND v_after::NUMERIC * 100 >= p_warning_percent::NUMERIC * f.limit_micros;
    IF v_holds = 9223372036854775807 THEN
        RAISE EXCEPTION 'hold count overflows' USING ERRCODE = 'SG001';
    END IF;

    PERFORM spendgate_budget_write_totals(p_community, p_period, v_committed, v_reserved, v_holds + 1, v_warned OR o_warning);
    PERFORM spendgate_budget_write_user(p_community, p_period, p_user, u_committed, u_reserved);
    INSERT INTO budget_hold (community_id, user_id, idempotency_key, estimate_micros, model_alias,
            period, created_at, expires_at)
        VALUES (p_community, p_user, p_key, p_estimate, p_model, p_period, p_now, p_expires);
    outcome := 'reserved'; o_limit := f.limit_micros;
    o_remaining := GREATEST(f.limit_micros - v_after, 0);
    RETURN NEXT;
END
$fn$;
"#;

/// The settlement rule of `spendgate_domain::apply_settlement` for
/// `finalize` and `cancel` (actual 0), a late finalize against a
/// tombstone, and, with `p_unheld_period`, `commit_unheld` (which creates
/// the community's row, without limits, when missing). Returns the hold
/// the cost was committed against, for the receipt.
const SETTLE: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_settle(
    p_community TEXT, p_user TEXT, p_key TEXT, p_actual BIGINT, p_now BIGINT,
    p_marker_expires BIGINT, p_unheld_model TEXT, p_unheld_period TEXT,
    p_lock_timeout TEXT, p_statement_timeout TEXT)
RETURNS TABLE (
    outcome TEXT, o_actual BIGINT, o_overshoot BIGINT,
    h_estimate BIGINT, h_model TEXT, h_period TEXT, h_created BIGINT, h_expires BIGINT)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    f RECORD;
    v_release BOOLEAN;
    v_committed BIGINT; v_reserved BIGINT; v_holds BIGINT; v_warned BOOLEAN;
    u_committed BIGINT; u_reserved BIGINT;
BEGIN
    SELECT * INTO f FROM spendgate_budget_lookup(p_community, p_user, p_key, p_now,
        p_unheld_period IS NOT NULL, p_lock_timeout, p_statement_timeout);
    IF NOT FOUND THEN
        outcome := 'unknown';
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM spendgate_budget_check_found(f.limit_micros, f.per_user_cap_micros,
        f.h_estimate, f.h_model, f.h_period, f.h_created, f.h_expires, f.m_kind, f.m_actual,
        f.m_estimate, f.m_model, f.m_period, f.m_created, f.m_hold_expires);
    IF f.h_estimate IS NOT NULL THEN
        outcome := 'finalized'; v_release := TRUE;
        h_estimate := f.h_estimate; h_model := f.h_model; h_period := f.h_period;
        h_created := f.h_created; h_expires := f.h_expires;
    ELSIF f.m_kind = 'finalized' THEN
        outcome := 'already_finalized'; o_actual := f.m_actual;
        RETURN NEXT;
        RETURN;
    ELSIF f.m_kind = 'reaped' THEN
        outcome := 'late_finalized'; v_release := FALSE;
        h_estimate := f.m_estimate; h_model := f.m_model; h_period := f.m_period;
        h_created := f.m_created; h_expires := f.m_hold_expires;
    ELSIF p_unheld_period IS NOT NULL THEN
        outcome := 'committed_without_hold'; v_release := FALSE;
        h_estimate := 0; h_model := p_unheld_model; h_period := p_unheld_period;
        h_created := p_now; h_expires := p_now;
    ELSE
        outcome := 'unknown';
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO v_committed, v_reserved, v_holds, v_warned
        FROM spendgate_budget_read_totals(p_community, h_period);
    SELECT * INTO u_committed, u_reserved
        FROM spendgate_budget_read_user(p_community, h_period, p_user);

    IF v_release THEN
        IF v_holds = 0 THEN
            RAISE EXCEPTION 'hold count is negative' USING ERRCODE = 'SG001';
        END IF;
        v_holds := v_holds - 1;
        v_reserved := spendgate_budget_sub('reserved', v_reserved, h_estimate);
        u_reserved := spendgate_budget_sub('user reserved', u_reserved, h_estimate);
    END IF;
    v_committed := spendgate_budget_add('committed', v_committed, p_actual);
    u_committed := spendgate_budget_add('user committed', u_committed, p_actual);
    o_overshoot := GREATEST(
        spendgate_budget_add('committed + reserved', v_committed, v_reserved)
            - COALESCE(f.limit_micros, 0), 0);
    o_actual := p_actual;

    PERFORM spendgate_budget_write_totals(p_community, h_period, v_committed, v_reserved, v_holds, v_warned);
    PERFORM spendgate_budget_write_user(p_community, h_period, p_user, u_committed, u_reserved);
    IF v_release THEN
        DELETE FROM budget_hold h
            WHERE h.community_id = p_community AND h.user_id = p_user AND h.idempotency_key = p_key;
    END IF;
    INSERT INTO budget_marker (community_id, user_id, idempotency_key, kind, actual_micros, expires_at)
        VALUES (p_community, p_user, p_key, 'finalized', p_actual, p_marker_expires)
        ON CONFLICT (community_id, user_id, idempotency_key) DO UPDATE SET kind = excluded.kind,
            actual_micros = excluded.actual_micros, estimate_micros = NULL, model_alias = NULL,
            period = NULL, created_at = NULL, hold_expires_at = NULL,
            expires_at = excluded.expires_at;
    RETURN NEXT;
END
$fn$;
"#;

/// `extend`: a live hold's expiry becomes the later of its own and
/// `p_wanted`; a hold past its expiry or a settled call is not live.
const EXTEND: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_extend(
    p_community TEXT, p_user TEXT, p_key TEXT, p_now BIGINT, p_wanted BIGINT,
    p_lock_timeout TEXT, p_statement_timeout TEXT)
RETURNS TABLE (outcome TEXT, o_expires BIGINT)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    f RECORD;
BEGIN
    SELECT * INTO f FROM spendgate_budget_lookup(p_community, p_user, p_key, p_now, FALSE,
        p_lock_timeout, p_statement_timeout);
    IF NOT FOUND THEN
        outcome := 'unknown';
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM spendgate_budget_check_found(f.limit_micros, f.per_user_cap_micros,
        f.h_estimate, f.h_model, f.h_period, f.h_created, f.h_expires, f.m_kind, f.m_actual,
        f.m_estimate, f.m_model, f.m_period, f.m_created, f.m_hold_expires);
    IF f.h_estimate IS NOT NULL AND p_now < f.h_expires THEN
        o_expires := GREATEST(f.h_expires, p_wanted);
        UPDATE budget_hold h SET expires_at = o_expires
            WHERE h.community_id = p_community AND h.user_id = p_user AND h.idempotency_key = p_key;
        outcome := 'extended';
    ELSIF f.h_estimate IS NOT NULL OR f.m_kind IS NOT NULL THEN
        outcome := 'not_live';
    ELSE
        outcome := 'unknown';
    END IF;
    RETURN NEXT;
END
$fn$;
"#;

/// One reap batch: releases at most `p_batch` holds expired at `p_now`
/// (oldest first) as settlements of 0, leaves a tombstone for each, and
/// with `p_clean_markers` first deletes at most `p_marker_batch` expired
/// markers. The community's lock keeps the batch the same set in every
/// statement.
const REAP: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_reap(
    p_community TEXT, p_now BIGINT, p_tombstone_expires BIGINT, p_batch BIGINT,
    p_clean_markers BOOLEAN, p_marker_batch BIGINT,
    p_lock_timeout TEXT, p_statement_timeout TEXT)
RETURNS TABLE (o_count BIGINT, o_reclaimed BIGINT)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    f RECORD;
    r_hold RECORD;
    r_period RECORD;
    r_user RECORD;
    v_committed BIGINT; v_reserved BIGINT; v_holds BIGINT; v_warned BOOLEAN;
    u_committed BIGINT; u_reserved BIGINT;
    v_deleted BIGINT;
BEGIN
    o_count := 0; o_reclaimed := 0;
    SELECT * INTO f FROM spendgate_budget_lookup(p_community, '', '', 0, FALSE,
        p_lock_timeout, p_statement_timeout);
    IF NOT FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM spendgate_budget_check_found(f.limit_micros, f.per_user_cap_micros,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

    FOR r_hold IN SELECT b.estimate_micros, b.model_alias::TEXT AS model, b.period::TEXT AS period,
                    b.created_at, b.expires_at
               FROM budget_hold b WHERE b.community_id = p_community AND b.expires_at <= p_now
               ORDER BY b.expires_at, b.user_id, b.idempotency_key LIMIT p_batch LOOP
        PERFORM spendgate_budget_check_hold('hold', r_hold.estimate_micros, r_hold.model, r_hold.period,
            r_hold.created_at, r_hold.expires_at);
        o_count := o_count + 1;
        o_reclaimed := spendgate_budget_add('reclaimed', o_reclaimed, r_hold.estimate_micros);
    END LOOP;
    IF o_count = 0 AND NOT p_clean_markers THEN
        RETURN NEXT;
        RETURN;
    END IF;

    FOR r_period IN SELECT b.period, SUM(b.estimate_micros)::BIGINT AS released, COUNT(*) AS n
               FROM (SELECT x.period::TEXT AS period, x.estimate_micros FROM budget_hold x
                      WHERE x.community_id = p_community AND x.expires_at <= p_now
                      ORDER BY x.expires_at, x.user_id, x.idempotency_key LIMIT p_batch) b
               GROUP BY b.period LOOP
        SELECT * INTO v_committed, v_reserved, v_holds, v_warned
        FROM spendgate_budget_read_totals(p_community, r_period.period);
        IF v_holds < r_period.n THEN
            RAISE EXCEPTION 'hold count is negative' USING ERRCODE = 'SG001';
        END IF;
        v_reserved := spendgate_budget_sub('reserved', v_reserved, r_period.released);
        PERFORM spendgate_budget_write_totals(p_community, r_period.period, v_committed, v_reserved, v_holds - r_period.n, v_warned);
    END LOOP;

    FOR r_user IN SELECT b.period, b.user_id, SUM(b.estimate_micros)::BIGINT AS released
               FROM (SELECT x.period::TEXT AS period, x.user_id::TEXT AS user_id, x.estimate_micros
                      FROM budget_hold x
                      WHERE x.community_id = p_community AND x.expires_at <= p_now
                      ORDER BY x.expires_at, x.user_id, x.idempotency_key LIMIT p_batch) b
               GROUP BY b.period, b.user_id LOOP
        SELECT * INTO u_committed, u_reserved
        FROM spendgate_budget_read_user(p_community, r_user.period, r_user.user_id);
        u_reserved := spendgate_budget_sub('user reserved', u_reserved, r_user.released);
        PERFORM spendgate_budget_write_user(p_community, r_user.period, r_user.user_id, u_committed, u_reserved);
    END LOOP;

    -- Expired markers count as absent already; a bounded batch goes
    -- before the tombstones may replace some.
    IF p_clean_markers THEN
        DELETE FROM budget_marker m WHERE (m.community_id, m.user_id, m.idempotency_key) IN (
            SELECT x.community_id, x.user_id, x.idempotency_key FROM budget_marker x
             WHERE x.community_id = p_community AND x.expires_at <= p_now LIMIT p_marker_batch);
    END IF;
    IF o_count = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO budget_marker (community_id, user_id, idempotency_key, kind, actual_micros,
            estimate_micros, model_alias, period, created_at, hold_expires_at, expires_at)
        SELECT b.community_id, b.user_id, b.idempotency_key, 'reaped', NULL, b.estimate_micros,
               b.model_alias, b.period, b.created_at, b.expires_at, p_tombstone_expires
          FROM budget_hold b WHERE b.community_id = p_community AND b.expires_at <= p_now
         ORDER BY b.expires_at, b.user_id, b.idempotency_key LIMIT p_batch
        ON CONFLICT (community_id, user_id, idempotency_key) DO UPDATE SET kind = excluded.kind,
            actual_micros = NULL, estimate_micros = excluded.estimate_micros,
            model_alias = excluded.model_alias, period = excluded.period,
            created_at = excluded.created_at, hold_expires_at = excluded.hold_expires_at,
            expires_at = excluded.expires_at;
    DELETE FROM budget_hold d WHERE d.community_id = p_community
        AND (d.user_id, d.idempotency_key) IN (
            SELECT b.user_id, b.idempotency_key FROM budget_hold b
             WHERE b.community_id = p_community AND b.expires_at <= p_now
             ORDER BY b.expires_at, b.user_id, b.idempotency_key LIMIT p_batch);
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    IF v_deleted <> o_count THEN
        RAISE EXCEPTION 'reaped % holds but deleted %', o_count, v_deleted USING ERRCODE = 'SG002';
    END IF;
    RETURN NEXT;
END
$fn$;
"#;

/// `set_limits`: one upsert of the community's row, waiting for its lock
/// under the same bounds as every other write. Replaced by the versioned
/// function of [`super::m20261207_000015_config_versions`], whose `down`
/// restores this one.
pub(crate) const SET_LIMITS: &str = r#"
CREATE OR REPLACE FUNCTION spendgate_budget_set_limits(
    p_community TEXT, p_limit BIGINT, p_cap BIGINT,
    p_lock_timeout TEXT, p_statement_timeout TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout, true),
            set_config('statement_timeout', p_statement_timeout, true);
    INSERT INTO budget_community (community_id, limit_micros, per_user_cap_micros)
        VALUES (p_community, p_limit, p_cap)
        ON CONFLICT (community_id) DO UPDATE SET limit_micros = excluded.limit_micros,
            per_user_cap_micros = excluded.per_user_cap_micros;
END
$fn$;
"#;

/// Every function this migration creates, with its argument types, for
/// `down`.
const FUNCTIONS: &[&str] = &[
    "spendgate_budget_set_limits(TEXT, BIGINT, BIGINT, TEXT, TEXT)",
    "spendgate_budget_reap(TEXT, BIGINT, BIGINT, BIGINT, BOOLEAN, BIGINT, TEXT, TEXT)",
    "spendgate_budget_extend(TEXT, TEXT, TEXT, BIGINT, BIGINT, TEXT, TEXT)",
    "spendgate_budget_settle(TEXT, TEXT, TEXT, BIGINT, BIGINT, BIGINT, TEXT, TEXT, TEXT, TEXT)",
    "spendgate_budget_reserve(TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT, BIGINT, BIGINT, INTEGER, TEXT, TEXT)",
    "spendgate_budget_write_user(TEXT, TEXT, TEXT, BIGINT, BIGINT)",
    "spendgate_budget_write_totals(TEXT, TEXT, BIGINT, BIGINT, BIGINT, BOOLEAN)",
    "spendgate_budget_read_user(TEXT, TEXT, TEXT)",
    "spendgate_budget_read_totals(TEXT, TEXT)",
    "spendgate_budget_check_found(BIGINT, BIGINT, BIGINT, TEXT, TEXT, BIGINT, BIGINT, TEXT, BIGINT, BIGINT, TEXT, TEXT, BIGINT, BIGINT)",
    "spendgate_budget_sub(TEXT, BIGINT, BIGINT)",
    "spendgate_budget_add(TEXT, BIGINT, BIGINT)",
    "spendgate_budget_check_hold(TEXT, BIGINT, TEXT, TEXT, BIGINT, BIGINT)",
    "spendgate_budget_time(TEXT, BIGINT)",
    "spendgate_budget_count(TEXT, BIGINT)",
    "spendgate_budget_micros(TEXT, BIGINT)",
    "spendgate_budget_corrupt(TEXT, TEXT)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for sql in [
            CHECKS, WRITE_USER, RESERVE, SETTLE, EXTEND, REAP, SET_LIMITS,
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for function in FUNCTIONS {
            db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS {function}"))
                .await?;
        }
        Ok(())
    }
}
