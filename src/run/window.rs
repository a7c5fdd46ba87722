//! A run that goes on outside its environment's window, as its journal records it.

use serde::{Deserialize, Serialize};

/// A run that goes on outside its environment's window, as its journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideWindow {
    /// The window, as the config gives it.
    pub window: String,
    /// A forward run let through by `--outside-window`.
    pub forced: bool,
    /// The `--reason` given with `--outside-window`.
    pub reason: Option<String>,
    /// Who ran it.
    pub user: String,
}
