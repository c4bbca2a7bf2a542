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

/// One thread's CPU time so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadSample {
    pub tid: u32,
    /// The thread's name (`comm`), e.g. a tokio worker or the media thread.
    pub name: String,
    pub cpu: Duration,
}

/// utime + stime of a `stat` line, and the command name between its parentheses.
fn parse_stat(stat: &str, path: &str) -> Result<(String, Duration), ProcError> {
    let open = stat.find('(');
    let close = stat.rfind(')');
    let (Some(open), Some(close)) = (open, close) else {
        return Err(ProcError::Format(path.to_owned()));
    };
    let name = stat.get(open + 1..close).unwrap_or_default().to_owned();
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let after = stat
        .get(close + 1..)
        .ok_or_else(|| ProcError::Format(path.to_owned()))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `after` starts at field 3.
    let field = |n: usize| -> Result<u64, ProcError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ProcError::Format(path.to_owned()))
    };
    let ticks = field(14)? + field(15)?;
    Ok((
        name,
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64),
    ))
}

/// Every thread of a process with its CPU time, best effort (threads come and go while the
/// directory is read). A single saturated thread — the server's media loop, say — limits a run
/// long before the process as a whole uses all cores, so the busiest thread is reported.
pub fn threads(pid: Pid) -> Vec<ThreadSample> {
    let dir = format!("{}/task", pid.dir());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let path = format!("{dir}/{tid}/stat");
            let stat = std::fs::read_to_string(&path).ok()?;
            let (name, cpu) = parse_stat(&stat, &path).ok()?;
            Some(ThreadSample { tid, name, cpu })
        })
        .collect()
}

/// Datagrams the kernel dropped at the UDP sockets bound to local `port` because their receive
/// buffer was full (the `drops` column of `/proc/net/udp` and `udp6`), summed; None when no such
/// socket exists. Tells a socket buffer that overflowed (its reader fell behind) apart from a
/// packet the server never sent.
pub fn udp_drops(port: u16) -> Option<u64> {
    let mut found = None;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            if let Some(drops) = fields.last().and_then(|d| d.parse::<u64>().ok()) {
                *found.get_or_insert(0) += drops;
            }
        }
    }
    found
}

/// Reads utime+stime from `stat` and VmRSS from `status`.
pub fn sample(pid: Pid) -> Result<ProcSample, ProcError> {
    let dir = pid.dir();
    let stat_path = format!("{dir}/stat");
    let stat = read(stat_path.clone())?;
    let (_, cpu) = parse_stat(&stat, &stat_path)?;
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
        let threads = threads(Pid::This);
        assert!(!threads.is_empty());
        assert!(threads.iter().all(|t| t.tid > 0));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("local address").port();
        assert_eq!(udp_drops(port), Some(0));
    }
}
