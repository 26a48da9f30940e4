//! The fault plan: what to inject into which calls, read from the control file
//! (`KEYHAVEN_FAULT_FILE`, looked at again on every call) or from `KEYHAVEN_FAULT` (read once).
//!
//! A plan is a list of directives separated by newlines, `;` or spaces; `#` starts a comment:
//!
//! | directive | effect |
//! |---|---|
//! | `device_error`, `session_handle_invalid`, `token_not_present` | every matching call fails with `CKR_DEVICE_ERROR`, `CKR_SESSION_HANDLE_INVALID` or `CKR_TOKEN_NOT_PRESENT` |
//! | `latency_ms=N` | every matching call waits N ms first |
//! | `fail_nth=N[:KIND]` | the N-th matching call from now fails once with KIND (default `device_error`) |
//! | `only=C_Encrypt,C_Decrypt` | the plan applies to these functions only |
//!
//! A kind may end in `:after`: the call is forwarded first and its answer replaced by the error
//! (the device did the work, the reply was lost). `session_handle_invalid` applies only to
//! functions that take a session handle. A new plan (the file's content or modification time
//! changed) starts its `fail_nth` count afresh; an empty or missing file is no fault.
//!
//! Every fault injected is recorded as a line `<function> <error>[ after]` in the file named
//! like the control file with `.injected` appended, so that a test can see what it provoked.

use cryptoki_sys::{CK_RV, CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID, CKR_TOKEN_NOT_PRESENT};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// What a function's first argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No session (slot and token functions).
    Module,
    /// A session handle.
    Session,
}

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub rv: CK_RV,
    /// Forward the call first, then answer the error.
    pub after: bool,
}

impl Fault {
    fn parse(text: &str) -> Result<Fault, String> {
        let (kind, after) = match text.strip_suffix(":after") {
            Some(kind) => (kind, true),
            None => (text, false),
        };
        let rv = match kind {
            "device_error" => CKR_DEVICE_ERROR,
            "session_handle_invalid" => CKR_SESSION_HANDLE_INVALID,
            "token_not_present" => CKR_TOKEN_NOT_PRESENT,
            other => return Err(format!("unknown fault kind {other:?}")),
        };
        Ok(Fault { rv, after })
    }

    fn applies(self, scope: Scope) -> bool {
        self.rv != CKR_SESSION_HANDLE_INVALID || scope == Scope::Session
    }
}

/// The parsed plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    persistent: Option<Fault>,
    latency: Option<Duration>,
    /// Matching calls left before the one that fails, and how it fails.
    nth: Option<(u64, Fault)>,
    only: Option<Vec<String>>,
}

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub latency: Option<Duration>,
    pub fault: Option<Fault>,
}

impl Plan {
    pub fn parse(text: &str) -> Result<Plan, String> {
        let mut plan = Plan::default();
        let directives = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split([';', ' ', '\t']))
            .filter(|d| !d.is_empty());
        for directive in directives {
            match directive.split_once('=') {
                None => plan.persistent = Some(Fault::parse(directive)?),
                Some(("latency_ms", ms)) => {
                    let ms = ms
                        .parse()
                        .map_err(|_| format!("latency_ms={ms:?} is not a number"))?;
                    plan.latency = Some(Duration::from_millis(ms));
                }
                Some(("fail_nth", spec)) => {
                    let (n, kind) = spec.split_once(':').unwrap_or((spec, "device_error"));
                    let n: u64 = n
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("fail_nth={n:?} is not a positive number"))?;
                    let kind = if kind == "after" {
                        "device_error:after"
                    } else {
                        kind
                    };
                    plan.nth = Some((n, Fault::parse(kind)?));
                }
                Some(("only", functions)) => {
                    plan.only = Some(
                        functions
                            .split(',')
                            .filter(|f| !f.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                Some((name, _)) => return Err(format!("unknown directive {name:?}")),
            }
        }
        Ok(plan)
    }

    fn decide(&mut self, function: &str, scope: Scope) -> Decision {
        if let Some(only) = &self.only
            && !only.iter().any(|f| f == function)
        {
            return Decision::default();
        }
        let mut fault = self.persistent.filter(|f| f.applies(scope));
        match self.nth {
            Some((1, nth)) if nth.applies(scope) => {
                self.nth = None;
                fault = fault.or(Some(nth));
            }
            Some((left, nth)) if nth.applies(scope) => self.nth = Some((left - 1, nth)),
            _ => {}
        }
        Decision {
            latency: self.latency,
            fault,
        }
    }
}

/// Where the plan comes from, and the plan in force.
struct Control {
    file: Option<PathBuf>,
    /// Where injected faults are recorded.
    record: Option<PathBuf>,
    /// The file's content and modification time when it was last parsed.
    seen: Option<(String, Option<SystemTime>)>,
    plan: Plan,
}

impl Control {
    fn from_environment() -> Control {
        let file = std::env::var_os("KEYHAVEN_FAULT_FILE").map(PathBuf::from);
        let plan = match (&file, std::env::var("KEYHAVEN_FAULT")) {
            (None, Ok(text)) => load(&text, "KEYHAVEN_FAULT"),
            _ => Plan::default(),
        };
        let record = file.as_ref().map(|f| {
            let mut name = f.clone().into_os_string();
            name.push(".injected");
            PathBuf::from(name)
        });
        Control {
            file,
            record,
            seen: None,
            plan,
        }
    }

    fn refresh(&mut self) {
        let Some(path) = &self.file else { return };
        let content = std::fs::read_to_string(path).unwrap_or_default();
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let current = (content, modified);
        if self.seen.as_ref() != Some(&current) {
            self.plan = load(&current.0, &path.display().to_string());
            self.seen = Some(current);
        }
    }
}

/// Parses a plan; a bad one is reported on stderr and injects nothing.
fn load(text: &str, source: &str) -> Plan {
    match Plan::parse(text) {
        Ok(plan) => {
            if plan != Plan::default() {
                eprintln!("keyhaven-hsm-fault: plan from {source}: {plan:?}");
            }
            plan
        }
        Err(error) => {
            eprintln!("keyhaven-hsm-fault: ignoring the plan in {source}: {error}");
            Plan::default()
        }
    }
}

fn control() -> MutexGuard<'static, Option<Control>> {
    static CONTROL: Mutex<Option<Control>> = Mutex::new(None);
    CONTROL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Consults the plan in force for one call of `function`.
pub fn decide(function: &str, scope: Scope) -> Decision {
    let mut guard = control();
    let control = guard.get_or_insert_with(Control::from_environment);
    control.refresh();
    let decision = control.plan.decide(function, scope);
    if let (Some(fault), Some(record)) = (decision.fault, &control.record) {
        let line = format!(
            "{function} {}{}\n",
            error_name(fault.rv),
            if fault.after { " after" } else { "" }
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(error) = written {
            eprintln!(
                "keyhaven-hsm-fault: cannot record to {}: {error}",
                record.display()
            );
        }
    }
    decision
}

fn error_name(rv: CK_RV) -> &'static str {
    match rv {
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        _ => "CKR_?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_decide() {
        let mut plan = Plan::parse("session_handle_invalid # comment\nonly=C_Encrypt").unwrap();
        assert_eq!(
            plan.decide("C_Decrypt", Scope::Session),
            Decision::default()
        );
        let fault = plan.decide("C_Encrypt", Scope::Session).fault.unwrap();
        assert_eq!((fault.rv, fault.after), (CKR_SESSION_HANDLE_INVALID, false));

        let mut plan = Plan::parse("fail_nth=2:token_not_present:after; latency_ms=5").unwrap();
        let first = plan.decide("C_GetSlotList", Scope::Module);
        assert_eq!(first.latency, Some(Duration::from_millis(5)));
        assert_eq!(first.fault, None);
        let second = plan.decide("C_OpenSession", Scope::Module).fault.unwrap();
        assert_eq!((second.rv, second.after), (CKR_TOKEN_NOT_PRESENT, true));
        assert_eq!(plan.decide("C_OpenSession", Scope::Module).fault, None);

        // session_handle_invalid neither hits nor counts calls without a session.
        let mut plan = Plan::parse("fail_nth=1:session_handle_invalid").unwrap();
        assert_eq!(plan.decide("C_GetSlotList", Scope::Module).fault, None);
        assert!(plan.decide("C_Login", Scope::Session).fault.is_some());

        assert_eq!(Plan::parse("").unwrap(), Plan::default());
        assert!(Plan::parse("fail_nth=0").is_err());
        assert!(Plan::parse("device_eror").is_err());
        assert!(Plan::parse("latency=5").is_err());
    }
}
