//! Where a run's CPU time went: this process's threads by role (the in-process server's
//! ledger writers, its HTTP workers, the SQLite checkpointer, the load generator's own
//! client), PostgreSQL's server processes, and how busy the whole machine was. Read from
//! Linux's `/proc` before and after a run; elsewhere every figure is absent. Each thread and
//! process is counted by its id: one that started during the run counts all its time, one
//! that exited during it counts nothing of that run (undercounted; a thread that exits no
//! longer takes anything away from the others' count), and every `postgres` process on the
//! machine is counted, whichever database it serves.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`: 100 on every Linux build that
/// matters here).
const TICKS_PER_SECOND: f64 = 100.0;

/// A thread's role, from its name.
fn role(thread: &str) -> &'static str {
    if thread.starts_with("ledger-writer") {
        "ledger writers"
    } else if thread.starts_with("actix-server") || thread.starts_with("actix-rt") {
        "HTTP workers"
    } else if thread.starts_with("sqlite-checkpoi") {
        "SQLite checkpointer"
    } else {
        "load generator and the rest"
    }
}

/// The roles in the order they are printed.
pub const ROLES: [&str; 4] = [
    "ledger writers",
    "HTTP workers",
    "SQLite checkpointer",
    "load generator and the rest",
];

/// CPU ticks so far: this process's threads by role, PostgreSQL's processes, and the
/// machine's busy and idle ticks.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// This process's threads by id and start time: role and CPU ticks.
    threads: BTreeMap<Task, (&'static str, u64)>,
    /// PostgreSQL's processes by id and start time: CPU ticks.
    postgres: BTreeMap<Task, u64>,
    machine_busy: u64,
    machine_all: u64,
}

/// A thread or process: its id and its start time (clock ticks since boot), so that an id
/// the kernel reuses during a run is another task, not the one that exited.
type Task = (u64, u64);

/// The ticks each task gained from `before` to `after`, summed; tasks only in `after`
/// started during the run and count whole.
fn gained<'a>(before: &BTreeMap<Task, u64>, after: impl Iterator<Item = (&'a Task, u64)>) -> u64 {
    after
        .map(|(id, ticks)| ticks.saturating_sub(before.get(id).copied().unwrap_or(0)))
        .sum()
}

/// The numeric name of a `/proc` entry (a process or thread id).
fn id_of(entry: &std::fs::DirEntry) -> Option<u64> {
    entry.file_name().to_str()?.parse().ok()
}

/// `(name, utime + stime, starttime)` from a `/proc/…/stat` line.
fn name_and_ticks(stat: &str) -> Option<(&str, u64, u64)> {
    // The name is in parentheses and may hold spaces; the fields after it are plain.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15, starttime field 22
    // (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some((name, utime + stime, start))
}

/// The CPU times now.
pub fn sample() -> Sample {
    let mut sample = Sample::default();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Some(tid) = id_of(&task) else { continue };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, ticks, start)) = name_and_ticks(&stat) {
                sample.threads.insert((tid, start), (role(name), ticks));
            }
        }
    }
    if let Ok(processes) = std::fs::read_dir("/proc") {
        for process in processes.flatten() {
            let Some(pid) = id_of(&process) else { continue };
            let Ok(stat) = std::fs::read_to_string(process.path().join("stat")) else {
                continue;
            };
            if let Some(("postgres", ticks, start)) = name_and_ticks(&stat) {
                sample.postgres.insert((pid, start), ticks);
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = stat.lines().next()
    {
        // cpu user nice system idle iowait irq softirq steal …
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        sample.machine_all = ticks.iter().take(8).sum();
        sample.machine_busy = sample.machine_all.saturating_sub(idle);
    }
    sample
}

/// What a run cost: CPU microseconds per debit by role and PostgreSQL, and the share of the
/// machine's CPU time that was busy.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    pub per_debit_us: Vec<(&'static str, f64)>,
    /// Zero when PostgreSQL is not on this machine or not in use.
    pub postgres_us: f64,
    /// Busy share of all the machine's cores, 0 to 1.
    pub machine_busy: f64,
}

impl Cost {
    /// Between two samples around a run that made `debits` debits.
    pub fn between(before: &Sample, after: &Sample, debits: u64) -> Option<Cost> {
        if debits == 0 || after.machine_all <= before.machine_all {
            return None;
        }
        let per_debit = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1_000_000.0 / debits as f64;
        let threads_before: BTreeMap<Task, u64> = before
            .threads
            .iter()
            .map(|(tid, (_, ticks))| (*tid, *ticks))
            .collect();
        let per_debit_us = ROLES
            .iter()
            .map(|role| {
                let of_role = after
                    .threads
                    .iter()
                    .filter(|(_, (r, _))| r == role)
                    .map(|(tid, (_, ticks))| (tid, *ticks));
                (*role, per_debit(gained(&threads_before, of_role)))
            })
            .collect();
        let postgres = gained(
            &before.postgres,
            after.postgres.iter().map(|(pid, t)| (pid, *t)),
        );
        Some(Cost {
            per_debit_us,
            postgres_us: per_debit(postgres),
            machine_busy: (after.machine_busy - before.machine_busy.min(after.machine_busy)) as f64
                / (after.machine_all - before.machine_all) as f64,
        })
    }

    /// One line: `writers 31.8 µs, HTTP 25.0 µs, …; machine 83% busy`.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .per_debit_us
            .iter()
            .filter(|(_, us)| *us > 0.0)
            .map(|(role, us)| format!("{role} {us:.1}"))
            .collect();
        if self.postgres_us > 0.0 {
            parts.push(format!("PostgreSQL {:.1}", self.postgres_us));
        }
        let total: f64 = self.per_debit_us.iter().map(|(_, us)| us).sum::<f64>() + self.postgres_us;
        format!(
            "{} (all {total:.1}); the machine {:.0}% busy",
            parts.join(", "),
            self.machine_busy * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_ticks() {
        let line = "4242 (actix-server wo) S 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20 0 9 0 31337 0";
        assert_eq!(name_and_ticks(line), Some(("actix-server wo", 267, 31337)));
        assert_eq!(name_and_ticks("4242 (x"), None);
    }

    #[test]
    fn cost_per_debit_is_the_ticks_between_samples_over_the_debits() {
        let mut before = Sample {
            machine_busy: 100,
            machine_all: 1_000,
            ..Sample::default()
        };
        before.threads.insert((7, 1), ("ledger writers", 50));
        // A checkpointer that exits during the run (a stopped server's), with more ticks
        // than the one that starts during it: it takes nothing from the new one's count,
        // even where the new one reuses its id.
        before.threads.insert((8, 1), ("SQLite checkpointer", 90));
        before.postgres.insert((100, 1), 5);
        before.postgres.insert((101, 1), 40);
        let mut after = before.clone();
        after.threads.insert((7, 1), ("ledger writers", 150));
        after.threads.remove(&(8, 1));
        after.threads.insert((8, 500), ("SQLite checkpointer", 30));
        // One backend gained 20, one exited, one started with 10 under the exited one's id.
        after.postgres.insert((100, 1), 25);
        after.postgres.remove(&(101, 1));
        after.postgres.insert((101, 600), 10);
        after.machine_busy = 900;
        after.machine_all = 2_000;
        let cost = Cost::between(&before, &after, 10_000).expect("a cost");
        // 100 ticks = 1 s over 10,000 debits.
        assert_eq!(cost.per_debit_us[0], ("ledger writers", 100.0));
        assert_eq!(cost.per_debit_us[2], ("SQLite checkpointer", 30.0));
        assert_eq!(cost.postgres_us, 30.0);
        assert!((cost.machine_busy - 0.8).abs() < 1e-9);
        assert!(Cost::between(&before, &after, 0).is_none());
    }

    #[test]
    fn threads_are_sorted_into_roles_by_name() {
        assert_eq!(role("ledger-writer-1"), "ledger writers");
        assert_eq!(role("actix-server wo"), "HTTP workers");
        assert_eq!(role("sqlite-checkpoi"), "SQLite checkpointer");
        assert_eq!(role("tokio-rt-worker"), "load generator and the rest");
    }
}
