//! The CPU each process of a load run spent, sampled from /proc: the
//! function's, Redis's, PostgreSQL's (the postmaster and its backends, live
//! and exited), and the whole machine's; and a process's peak memory.

use std::time::{Duration, Instant};

use loadtest::function_process::FunctionProcess;

use crate::Bench;
use crate::load::Load;

/// CPU time (clock ticks) of each process a load involves, over one run.
#[derive(Default, Clone, Copy)]
pub struct Cpu {
    pub function: u64,
    /// Of `function`, the kernel's (stime): its system calls and wake-ups.
    pub function_system: u64,
    pub redis: u64,
    pub postgres: u64,
    pub load_generator: u64,
    pub machine_busy: u64,
}

/// The processes whose CPU a load run counts.
pub struct Watch {
    function: Option<u32>,
    pub postgres: u32,
    redis: u32,
}

pub struct CpuSnapshot {
    function: u64,
    function_system: u64,
    redis: u64,
    postgres: u64,
    machine_busy: u64,
}

impl Bench<'_> {
    /// The processes whose CPU a load run counts.
    pub fn watch(&self, function: Option<&FunctionProcess>) -> Watch {
        Watch {
            function: function.map(FunctionProcess::pid),
            redis: self.redis.pid() as u32,
            postgres: self.pg.pid() as u32,
        }
    }
}

impl Watch {
    pub fn snapshot(&self) -> CpuSnapshot {
        let (function, function_system) = self.function.map_or((0, 0), proc_user_and_system_ticks);
        CpuSnapshot {
            function: function + function_system,
            function_system,
            redis: proc_ticks(self.redis, false),
            postgres: postgres_ticks(self.postgres),
            machine_busy: machine_busy_ticks(),
        }
    }
}

impl CpuSnapshot {
    /// The CPU spent from `before` to this snapshot, with the load
    /// generator's own (`load_secs`, from its rusage).
    pub fn since(&self, before: &CpuSnapshot, load_secs: f64) -> Cpu {
        Cpu {
            function: self.function.saturating_sub(before.function),
            function_system: self.function_system.saturating_sub(before.function_system),
            redis: self.redis.saturating_sub(before.redis),
            postgres: self.postgres.saturating_sub(before.postgres),
            load_generator: (load_secs * clock_ticks_per_sec()).round() as u64,
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
        }
    }
}

/// utime + stime of a process (all its threads), with its reaped children's.
fn proc_ticks(pid: u32, with_children: bool) -> u64 {
    let fields = proc_cpu_fields(pid);
    // utime, stime, cutime, cstime.
    let own = fields[0] + fields[1];
    if with_children {
        own + fields[2] + fields[3]
    } else {
        own
    }
}

/// utime and stime of a process (all its threads), apart.
fn proc_user_and_system_ticks(pid: u32) -> (u64, u64) {
    let fields = proc_cpu_fields(pid);
    (fields[0], fields[1])
}

/// utime, stime, cutime and cstime of a process (zeros once it is gone).
fn proc_cpu_fields(pid: u32) -> [u64; 4] {
    let Some(stat) = stat_after_command(pid) else {
        return [0; 4];
    };
    let fields: Vec<u64> = stat
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    std::array::from_fn(|i| fields.get(11 + i).copied().unwrap_or(0))
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_after_command(pid)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn process_state(pid: u32) -> Option<char> {
    stat_after_command(pid)?.trim_start().chars().next()
}

/// `/proc/<pid>/stat` after the command's name (which may hold spaces and
/// parentheses): the state, the parent, ... the CPU times.
fn stat_after_command(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.to_owned())
}

/// The postmaster's children once none is exiting (none a zombie) and at
/// most `at_most` are left, or after a second: their number.
pub fn settled_children(postmaster: u32, at_most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let states: Vec<char> = children_of(postmaster).filter_map(process_state).collect();
        let settled = states.len() <= at_most && !states.contains(&'Z');
        if settled || Instant::now() > deadline {
            return states.len();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn children_of(parent: u32) -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| parent_of(pid) == Some(parent))
}

/// The postmaster and its backends: the live ones, and the ones that
/// exited (the postmaster reaps them into its children's time).
fn postgres_ticks(postmaster: u32) -> u64 {
    proc_ticks(postmaster, true)
        + children_of(postmaster)
            .map(|pid| proc_ticks(pid, false))
            .sum::<u64>()
}

/// Busy ticks of all the machine's CPUs (everything but idle and iowait).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    total - v.get(3).unwrap_or(&0) - v.get(4).unwrap_or(&0)
}

/// The function's CPU per request of a load run, in µs.
pub fn function_cpu_us(load: &Load) -> f64 {
    cpu_us_per_request(load, load.cpu.function)
}

/// Of [`function_cpu_us`], the kernel's, in µs.
pub fn function_system_us(load: &Load) -> f64 {
    cpu_us_per_request(load, load.cpu.function_system)
}

/// `ticks` of CPU (a process's, from a load run's [`Cpu`]) per request of
/// that run, in µs.
pub fn cpu_us_per_request(load: &Load, ticks: u64) -> f64 {
    cpu_us_per_request_of(load.done, ticks)
}

/// `ticks` of CPU per one of `requests`, in µs.
pub fn cpu_us_per_request_of(requests: u64, ticks: u64) -> f64 {
    ticks as f64 * 1e6 / clock_ticks_per_sec() / requests.max(1) as f64
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// A field of /proc/<pid>/status in KiB (`VmHWM:`: the peak RSS).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
