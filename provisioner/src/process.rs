//! Telling a process apart from a later one that reuses its pid: a pid is only trusted
//! together with the time the process started (field 22 of `/proc/PID/stat`, in clock
//! ticks since boot), recorded when it was spawned.

/// When `pid` started, if it runs (a zombie, dead but not reaped, does not count).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (name) STATE PPID …`: the name may hold spaces and parentheses, the rest not.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // Field 22 of the whole line is the 20th after the name.
    fields.get(19)?.parse().ok()
}

/// Whether the process recorded as (`pid`, `started`) still runs.
pub fn is_running(pid: u32, started: Option<u64>) -> bool {
    started.is_some() && start_ticks(pid) == started
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_its_start_and_a_finished_one_is_not() {
        let me = std::process::id();
        let started = start_ticks(me);
        assert!(started.is_some());
        assert!(is_running(me, started));
        assert!(!is_running(me, started.map(|t| t + 1)), "same pid, another start: another process");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(start_ticks(pid), None);
    }
}
