//! [`RegistryMachine`]: the registry's [`engine::StateMachine`], a thin seam between the
//! engine's apply thread and the shared [`Registry`].
//!
//! Strategy: image (`MERGES_SNAPSHOTS = false`). A registry is small (names, addresses, two
//! numbers per instance), so [`StateMachine::image`] serialises the whole state on the apply
//! thread at the snapshot's index (`image.rs`). Apply is deterministic: the only inputs are
//! the command bytes and the raft index (time never is: expiry is a command the leader
//! proposes, see `expiry.rs`).

use std::io::Read;
use std::sync::Arc;

use engine::{Command as Committed, ImageError, Rejected, StateMachine};

use crate::command::Command;
use crate::registry::{Effect, Registry};

/// The largest registry image a member restores or accepts from a peer.
const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Applies registry commands to the shared [`Registry`].
pub struct RegistryMachine {
    registry: Arc<Registry>,
}

impl RegistryMachine {
    /// The machine writing into `registry` (which the API, watchers and expiry read).
    pub fn new(registry: Arc<Registry>) -> RegistryMachine {
        RegistryMachine { registry }
    }
}

impl StateMachine for RegistryMachine {
    type Output = Effect;
    const MERGES_SNAPSHOTS: bool = false;

    fn apply(&mut self, c: Committed<'_>) -> Result<Effect, Rejected> {
        let command = Command::decode(c.bytes).map_err(|e| Rejected(e.to_string()))?;
        Ok(self.registry.apply(c.index, command))
    }

    fn restore(&mut self, image: &mut dyn Read, index: u64) -> Result<(), ImageError> {
        let image = engine::read_small_image(image, MAX_IMAGE_BYTES)?;
        let services = crate::image::decode(&image).map_err(|e| ImageError(e.to_string()))?;
        self.registry.restore(services, index);
        Ok(())
    }

    fn validate(image: &mut dyn Read) -> Result<(), ImageError> {
        let image = engine::read_small_image(image, MAX_IMAGE_BYTES)?;
        crate::image::decode(&image)
            .map(|_| ())
            .map_err(|e| ImageError(e.to_string()))
    }

    fn image(&self) -> Vec<u8> {
        self.registry.with_services(crate::image::encode)
    }
}
