//! A plugin that attacks the host, for the sandbox's tests. Its configuration's `attack` picks
//! what the `before` hook does:
//!
//! - `loop`: spins forever (the deadline stops it);
//! - `memory`: allocates until the memory cap traps it;
//! - `recursion`: recurses without end (stack overflow traps);
//! - `huge`: returns a patch far larger than the host accepts;
//! - `flood`: calls the host in a loop (the host-call cap stops it);
//! - `foreign`: reads the record id in its configuration's `id` (another tenant's: not found);
//! - `write_other`: creates a record of an entity outside its capabilities (denied);
//! - `reenter`: updates the record it is called for, which calls it again (the depth cap stops it);
//! - `notify`: enqueues an `email` outbox message naming the record, then proceeds;
//! - `notify_then_fail`: enqueues one, then fails (the write and the message roll back);
//! - `notify_sms`: enqueues a kind its manifest does not request (denied);
//! - `notify_in_validator`: its validator enqueues one (validators may not);
//! - `echo`: writes the names of the fields it was given, and the fields of the record it reads
//!   back through the host, into `seen` (what a hook running for a user may see);
//! - `panic`: panics (a trap);
//! - `none`: proceeds.

use rapport_sdk::{Event, FieldError, Outcome, Plugin, json, records};

pub struct Hostile;

fn attack() -> String {
    rapport_sdk::config()
        .get("attack")
        .and_then(|value| value.as_str())
        .unwrap_or("none")
        .to_owned()
}

/// Recursion the optimizer cannot turn into a loop: the callee is opaque and the frame is used.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    let next: fn(u64) -> u64 = std::hint::black_box(recurse);
    next(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

fn notify(event: &Event, kind: &str) -> Result<String, String> {
    let name = event.record.get_str("name").unwrap_or_default();
    rapport_sdk::enqueue(
        kind,
        &json!({"to": "ops@example.com", "subject": format!("New target {name}")}),
    )
    .map_err(|error| format!("{error:?}"))
}

impl Plugin for Hostile {
    fn validate(event: Event) -> Vec<FieldError> {
        if attack() == "notify_in_validator"
            && let Err(error) = notify(&event, "email")
        {
            return vec![FieldError::new("", error)];
        }
        Vec::new()
    }

    fn hook(event: Event) -> Result<Outcome, String> {
        match attack().as_str() {
            "loop" => {
                let mut spins: u64 = 0;
                loop {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => Ok(Outcome::patch(json!({"n": recurse(0)}))),
            "huge" => Ok(Outcome::patch(json!({"name": "x".repeat(3 << 19)}))),
            "flood" => {
                let mut last = String::new();
                for _ in 0..1_000_000 {
                    if let Err(error) = records::query("target", "", "", 1) {
                        last = format!("{error:?}");
                        break;
                    }
                }
                Err(format!("the flood ended: {last}"))
            }
            "foreign" => {
                let id = rapport_sdk::config()
                    .get("id")
                    .and_then(|value| value.as_str())
                    .unwrap_or_default()
                    .to_owned();
                match records::get("target", &id) {
                    Ok(None) => Ok(Outcome::patch(json!({"name": "foreign record not found"}))),
                    Ok(Some(record)) => Ok(Outcome::patch(
                        json!({"name": format!("LEAKED {}", record.data.len())}),
                    )),
                    Err(error) => Err(format!("{error:?}")),
                }
            }
            "write_other" => match records::create("secret", &json!({"name": "x"})) {
                Ok(_) => Ok(Outcome::patch(
                    json!({"name": "wrote outside its capabilities"}),
                )),
                Err(error) => Err(format!("{error:?}")),
            },
            "reenter" => {
                if event.record.id.is_empty() {
                    return Ok(Outcome::Proceed);
                }
                match records::update("target", &event.record.id, &json!({"n": event.depth})) {
                    Ok(_) => Ok(Outcome::Proceed),
                    Err(error) => Err(format!("{error:?}")),
                }
            }
            "notify" => notify(&event, "email").map(|_| Outcome::Proceed),
            "notify_then_fail" => {
                notify(&event, "email")?;
                Err("failing after enqueueing a message".into())
            }
            "notify_sms" => notify(&event, "sms").map(|_| Outcome::Proceed),
            "echo" => {
                let given: Vec<&str> = event.record.data.keys().map(String::as_str).collect();
                let read = match records::get("target", &event.record.id) {
                    Ok(Some(record)) => record.data.keys().cloned().collect::<Vec<_>>().join(","),
                    Ok(None) => "none".to_owned(),
                    Err(error) => format!("{error:?}"),
                };
                Ok(Outcome::patch(
                    json!({"seen": format!("given {}; read {read}", given.join(","))}),
                ))
            }
            "panic" => panic!("the hostile plugin panics"),
            _ => Ok(Outcome::Proceed),
        }
    }
}

rapport_sdk::plugin!(Hostile);
