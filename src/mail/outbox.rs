//! The `outbox` table: messages waiting to be sent, claimed by one sender at a time.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use latchkey_db::DbConnection;

use crate::db::schema::outbox;

/// A message waiting to be sent. `body` is sealed.
#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct Message {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
pub struct NewMessage<'a> {
    pub created_at: NaiveDateTime,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
}

impl NewMessage<'_> {
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(outbox::table).values(self).execute(conn).map(drop)
    }
}

/// Claims up to `limit` messages that are due and not claimed by another sender, until
/// `claim_until`. Each claim is one conditional update, so two instances never send the
/// same message (without `SELECT … FOR UPDATE SKIP LOCKED`, which SQLite lacks).
pub fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    claim_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<Message>> {
    let free = outbox::claimed_until.is_null().or(outbox::claimed_until.lt(now));
    let due: Vec<i64> = outbox::table
        .filter(outbox::next_attempt_at.le(now))
        .filter(free)
        .order(outbox::id.asc())
        .limit(limit)
        .select(outbox::id)
        .load(conn)?;
    let mut claimed = Vec::with_capacity(due.len());
    for id in due {
        let taken = diesel::update(outbox::table.find(id).filter(free))
            .set(outbox::claimed_until.eq(claim_until))
            .execute(conn)?;
        if taken == 1 {
            claimed.push(outbox::table.find(id).select(Message::as_select()).first(conn)?);
        }
    }
    Ok(claimed)
}

/// A message sent, or given up: it leaves the outbox.
pub fn remove(conn: &mut DbConnection, id: i64) -> QueryResult<()> {
    diesel::delete(outbox::table.find(id)).execute(conn).map(drop)
}

/// A failed attempt: try again at `next_attempt_at`.
pub fn retry_at(
    conn: &mut DbConnection,
    id: i64,
    attempts: i32,
    next_attempt_at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::update(outbox::table.find(id))
        .set((
            outbox::attempts.eq(attempts),
            outbox::next_attempt_at.eq(next_attempt_at),
            outbox::claimed_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
        .map(drop)
}

/// How many messages wait (for the health of the mail path, and tests).
pub fn waiting(conn: &mut DbConnection) -> QueryResult<i64> {
    outbox::table.count().get_result(conn)
}
