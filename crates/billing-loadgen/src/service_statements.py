# The SQLite engine alone running the service's own statements for a usage debit, in batches
# of the size the service's ledger writer formed at its peak: what the database does when
# it does the service's work, with no HTTP, no Rust and no billing-core. Run by
# `billing-loadgen --compare` on the file the service wrote (its migrations, its wallets and
# the ledger of its run) after the service has stopped.
#
# The statements are those of crates/billing-store/src/sqlite.rs and posting.rs, in their
# order: under `BEGIN IMMEDIATE`, the batch's wallets' rows (sorted), their auto top-up rows,
# their active holds, each posting's idempotency claim; then one `INSERT` per entry, one per
# claim and one `UPDATE` per wallet; `COMMIT`. Rows carry what a debit's carry: a
# time-ordered entry id, the description, the key as the entry's reference, a SHA-256
# chained from the wallet's head, the claim's fingerprint as billing-core writes it.
#
# It also counts the WAL's pages a debit (frames appended to the log): `wal_autocheckpoint`
# is off on this connection, and a passive checkpoint every CHECKPOINT_EVERY batches
# answers how many frames the log held (the log restarts after each complete one). The
# service checkpoints on a thread of its own, so those checkpoints are not timed here.
#
# This is not the engine's ceiling: Python's own cost per statement is in it, and Python's
# SQLite may be another version than the service's (printed).
#
# `checkpoint(db, path)` comes from the load generator's prelude (baseline.rs, PYTHON_PRELUDE),
# which the reference loop shares.
#
# argv: path, wallets, batch size, seconds. Prints: debits/s, WAL pages a debit, SQLite's
# version.
import hashlib, random, sqlite3, sys, time

path, wallets, batch, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
CHECKPOINT_EVERY = max(1, 2000 // batch)
DESCRIPTION = "API usage - load"
FINGERPRINT = "usage|amount|1|%d:%s" % (len(DESCRIPTION), DESCRIPTION)
db = sqlite3.connect(path, isolation_level=None)
for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL",
               "foreign_keys = ON", "mmap_size = 268435456", "wal_autocheckpoint = 0"):
    db.execute("PRAGMA " + pragma)
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
ids = [r[0] for r in db.execute(
    "SELECT id FROM accounts ORDER BY balance DESC, id LIMIT ?", (wallets,))]
if not ids:
    sys.exit("no accounts in " + path)
heads = {r[0]: r[1] for r in db.execute(
    "SELECT id, ledger_head FROM accounts WHERE id IN (%s)" % ",".join("?" * len(ids)), ids)}
prefix = "engine-%d" % int(time.time())
done = batches = frames = pending = 0
paused = 0.0
rng = random.Random(7)
start = time.monotonic()
end = start + seconds
while time.monotonic() < end + paused:
    picks = [ids[0] if len(ids) == 1 else rng.choice(ids) for _ in range(batch)]
    wallets_of_batch = sorted(set(picks))
    now = int(time.time() * 1_000_000)
    db.execute("BEGIN IMMEDIATE")
    rows = {}
    for w in wallets_of_batch:
        rows[w] = db.execute(
            "SELECT id, balance, limit_enabled, limit_monthly, limit_action, spend_month_start, "
            "spend_month, alert_enabled, alert_threshold, limit_told_month, ledger_head "
            "FROM accounts WHERE id = ?", (w,)).fetchone()
    for w in wallets_of_batch:
        db.execute(
            "SELECT account_id, enabled, threshold, amount_minor, currency, monthly_cap_minor, "
            "credits, bonus, failure_limit, pending_topup_id, failures, month_start, "
            "month_charged_minor, disabled_reason FROM auto_topups WHERE account_id = ?",
            (w,)).fetchall()
    for w in wallets_of_batch:
        db.execute(
            "SELECT account_id, amount, expires_at FROM holds WHERE account_id = ? "
            "AND status = ? AND expires_at > ?", (w, "active", now)).fetchall()
    keys = []
    for i, w in enumerate(picks):
        key = (w + ":usage", "%s-%d" % (prefix, done + i))
        keys.append(key)
        db.execute("SELECT fingerprint, result_ref FROM idempotency_keys "
                   "WHERE scope = ? AND key = ?", key).fetchone()
    balances = {w: rows[w][1] for w in rows}
    entries = []
    for i, (w, key) in enumerate(zip(picks, keys)):
        balances[w] -= 1
        entry = "txn_%013x%013x" % (now, done + i)
        heads[w] = hashlib.sha256(("%s|%s|-1" % (heads[w], entry)).encode()).hexdigest()
        entries.append(entry)
        db.execute(
            "INSERT INTO ledger_entries (id, account_id, kind, amount, balance_after, "
            "description, reference, created_at, usage_model, usage_input_tokens, "
            "usage_output_tokens, usage_input_per_million, usage_output_per_million, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry, w, "usage", -1, balances[w], DESCRIPTION, key[1], now,
             None, None, None, None, None, heads[w]))
    for key, entry in zip(keys, entries):
        db.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, result_ref, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key[0], key[1], FINGERPRINT, entry, now))
    for w in wallets_of_batch:
        row = rows[w]
        db.execute(
            "UPDATE accounts SET balance = ?, spend_month_start = ?, spend_month = ?, "
            "limit_told_month = ?, ledger_head = ? WHERE id = ? AND balance = ?",
            (balances[w], row[5], row[6] + row[1] - balances[w], row[9], heads[w], w, row[1]))
    db.execute("COMMIT")
    done += batch
    batches += 1
    pending += 1
    if pending == CHECKPOINT_EVERY:
        stopped = time.monotonic()
        frames += checkpoint(db, path)
        pending = 0
        paused += time.monotonic() - stopped
elapsed = time.monotonic() - start - paused
if pending:
    frames += checkpoint(db, path)
print(done / elapsed, frames / max(done, 1), sqlite3.sqlite_version)
