//! What the coordinator accepts from an agent. It trusts no agent message beyond these checks:
//! every number is bounded, every string is cut and stripped of control characters before it
//! can reach `status`, a log line or a page, and a Hello that asks for more than a machine can
//! have is refused with the reason.

use crate::serve::queue::JobKey;
use crater_proto::pb;
use crater_proto::text::printable;
use crater_proto::tool::Tool;

/// More slots than any machine has cores: a Hello asking for more is refused.
pub const MAX_SLOTS: u32 = 4096;
const MAX_NAME_CHARS: usize = 64;
const MAX_TARGETS: usize = 16;
const MAX_TARGET_CHARS: usize = 64;
/// `rustc 1.93.0-nightly (0123456789 2026-11-01)` and room for a vendor's suffix.
const MAX_TOOLCHAIN_CHARS: usize = 128;
const MAX_ERROR_CHARS: usize = 2000;
/// crates.io names are at most 64 characters; versions are short.
const MAX_CRATE_CHARS: usize = 128;

/// An agent's Hello, checked and cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Its process's random id (empty: it gets none, and cannot reclaim anything).
    pub id: String,
    pub name: String,
    pub slots: u32,
    pub tools: Vec<String>,
    pub targets: Vec<String>,
    pub held: Vec<HeldJob>,
    /// What `rustc -V` says of its toolchain.
    pub toolchain: String,
}

/// A job an agent says it still holds, checked: its slot is one the agent declared, its tool
/// one this coordinator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldJob {
    pub job_id: u64,
    pub attempt: u32,
    pub slot: u32,
    pub key: JobKey,
    pub finished: bool,
}

/// Checks a Hello: `Err` says what is wrong, for the agent (it exits with it).
pub fn hello(hello: &pb::Hello) -> Result<Hello, String> {
    if hello.slots == 0 || hello.slots > MAX_SLOTS {
        return Err(format!(
            "an agent has 1 to {MAX_SLOTS} slots, not {}",
            hello.slots
        ));
    }
    let mut tools = Vec::new();
    for tool in &hello.tools {
        match tool.parse::<Tool>() {
            Ok(tool) if !tools.contains(&tool.to_string()) => tools.push(tool.to_string()),
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "unknown tool {:?} (this coordinator knows {})",
                    printable(tool, MAX_NAME_CHARS),
                    Tool::ALL
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    if hello.targets.len() > MAX_TARGETS {
        return Err(format!(
            "at most {MAX_TARGETS} targets, not {}",
            hello.targets.len()
        ));
    }
    let name = printable(hello.agent_name.trim(), MAX_NAME_CHARS);
    // A slot holds one running job and at most one finished one waiting for its acknowledgement.
    if hello.held.len() > 2 * hello.slots as usize {
        return Err(format!(
            "{} held jobs for {} slots",
            hello.held.len(),
            hello.slots
        ));
    }
    let mut held = Vec::new();
    for h in &hello.held {
        let tool = h.tool.parse::<Tool>().map_err(|_| {
            format!(
                "a held job with unknown tool {:?}",
                printable(&h.tool, MAX_NAME_CHARS)
            )
        })?;
        if h.slot >= hello.slots {
            return Err(format!(
                "a held job in slot {} of {} slots",
                h.slot, hello.slots
            ));
        }
        let key = (
            tool,
            printable(&h.krate, MAX_CRATE_CHARS),
            printable(&h.version, MAX_CRATE_CHARS),
        );
        held.push(HeldJob {
            job_id: h.job_id,
            attempt: h.attempt,
            slot: h.slot,
            key,
            finished: h.finished,
        });
    }
    Ok(Hello {
        id: printable(&hello.agent_id, MAX_NAME_CHARS),
        held,
        name: if name.is_empty() {
            "unnamed".to_owned()
        } else {
            name
        },
        slots: hello.slots,
        tools,
        targets: (hello.targets.iter())
            .map(|t| printable(t, MAX_TARGET_CHARS))
            .collect(),
        toolchain: printable(hello.toolchain.trim(), MAX_TOOLCHAIN_CHARS),
    })
}

/// Cuts and cleans the strings of a JobDone; its numbers are checked where they are used.
pub fn job_done(done: &mut pb::JobDone) {
    done.failed_step = printable(&done.failed_step, 32);
    done.harness_error = printable(&done.harness_error, MAX_ERROR_CHARS);
    done.timeout_kind = printable(&done.timeout_kind, 16);
    done.log_sha256 = printable(&done.log_sha256, 64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> pb::Hello {
        pb::Hello {
            agent_name: "agent-1".into(),
            protocol_version: crater_proto::PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            slots: 4,
            memory_per_slot_bytes: 8 << 30,
            tools: vec!["check".into(), "test".into(), "check".into()],
            targets: vec!["x86_64-unknown-linux-gnu".into()],
            agent_id: "0123abcd".into(),
            held: vec![held(3)],
            toolchain: "rustc 1.93.0-nightly (0123456789 2026-11-01)".into(),
        }
    }

    fn held(slot: u32) -> pb::HeldJob {
        pb::HeldJob {
            job_id: 7,
            attempt: 1,
            slot,
            tool: "check".into(),
            krate: "itoa".into(),
            version: "1.0.0".into(),
            log_bytes: 10,
            finished: false,
        }
    }

    #[test]
    fn a_good_hello_is_cleaned_and_a_greedy_one_refused() {
        let hello_ok = hello(&base()).unwrap();
        assert_eq!(hello_ok.tools, ["check", "test"]);
        let hostile = pb::Hello {
            agent_name: "bad\u{1b}]0;title\u{7}agent".into(),
            toolchain: format!("rustc\u{1b}[2J {}", "9".repeat(1000)),
            ..base()
        };
        let cleaned = hello(&hostile).unwrap();
        assert_eq!(cleaned.name, "bad]0;titleagent");
        assert!(
            cleaned.toolchain.starts_with("rustc[2J 999") && cleaned.toolchain.len() < 200,
            "the toolchain goes into every result, cleaned and cut: {}",
            cleaned.toolchain
        );
        let greedy = pb::Hello {
            slots: u32::MAX,
            ..base()
        };
        assert!(hello(&greedy).unwrap_err().contains("1 to 4096 slots"));
        let none = pb::Hello { slots: 0, ..base() };
        assert!(hello(&none).is_err());
        let unknown = pb::Hello {
            tools: vec!["rm -rf".into()],
            ..base()
        };
        assert!(hello(&unknown).unwrap_err().contains("unknown tool"));
        let many = pb::Hello {
            targets: vec!["t".into(); 100],
            ..base()
        };
        assert!(hello(&many).is_err());
    }

    #[test]
    fn held_jobs_must_be_in_declared_slots_and_few() {
        let ok = hello(&base()).unwrap();
        assert_eq!(ok.id, "0123abcd");
        assert_eq!(ok.held[0].key, (Tool::Check, "itoa".into(), "1.0.0".into()));
        let outside = pb::Hello {
            held: vec![held(4)],
            ..base()
        };
        assert!(hello(&outside).unwrap_err().contains("slot 4 of 4"));
        let hoard = pb::Hello {
            held: vec![held(0); 9],
            ..base()
        };
        assert!(
            hello(&hoard)
                .unwrap_err()
                .contains("9 held jobs for 4 slots")
        );
        let mut unknown = held(0);
        unknown.tool = "rm -rf".into();
        let unknown = pb::Hello {
            held: vec![unknown],
            ..base()
        };
        assert!(hello(&unknown).unwrap_err().contains("unknown tool"));
    }

    #[test]
    fn job_done_strings_are_bounded_and_printable() {
        let mut done = pb::JobDone {
            harness_error: format!("\u{1b}[2J{}", "e".repeat(10_000)),
            failed_step: "build\nforged".into(),
            ..Default::default()
        };
        job_done(&mut done);
        assert!(done.harness_error.chars().count() <= MAX_ERROR_CHARS + 1);
        assert!(!done.harness_error.contains('\u{1b}'));
        assert_eq!(done.failed_step, "build forged");
    }
}
