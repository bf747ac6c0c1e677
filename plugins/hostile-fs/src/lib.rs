//! Tries to read the server's files. It imports `wasi:filesystem`, so the host refuses the
//! component at upload and names the import.

use rapport_sdk::{Event, Outcome, Plugin};

pub struct ReadsFiles;

impl Plugin for ReadsFiles {
    fn hook(_event: Event) -> Result<Outcome, String> {
        let secrets = std::fs::read_to_string("/etc/passwd").map_err(|error| error.to_string())?;
        Ok(Outcome::patch(rapport_sdk::json!({"name": secrets})))
    }
}

rapport_sdk::plugin!(ReadsFiles);
