//! Pure helpers shared by every part of klab (no I/O), mirroring k8s.io/apimachinery's utils.

pub mod duration;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod validation;

/// The Status cause NamespaceLifecycle adds when it refuses a write into a terminating
/// namespace (upstream's `v1.NamespaceTerminatingCause`).
pub const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";
