//! Pure helpers shared by every part of klab (no I/O), mirroring k8s.io/apimachinery's utils.

pub mod duration;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod validation;
