//! CPU time and resident memory of a process, from `/proc` (Linux).

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("unexpected format of {0}")]
    Format(String),
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// Which process: a pid, or this one (`/proc/self`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    This,
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::This => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

fn read(path: String) -> Result<String, ProcError> {
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Reads utime+stime from `stat` and VmRSS from `status`.
pub fn sample(pid: Pid) -> Result<ProcSample, ProcError> {
    let dir = pid.dir();
    let stat_path = format!("{dir}/stat");
    let stat = read(stat_path.clone())?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .ok_or_else(|| ProcError::Format(stat_path.clone()))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `after` starts at field 3.
    let field = |n: usize| -> Result<u64, ProcError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ProcError::Format(stat_path.clone()))
    };
    let ticks = field(14)? + field(15)?;
    let cpu = Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
    let status = read(format!("{dir}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    Ok(ProcSample { cpu, rss })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(Pid::This).expect("sample");
        assert!(s.rss > 0);
        assert!(sample(Pid::Other(u32::MAX)).is_err());
    }
}
