//! Fleet runs: one release over many databases (a database per tenant). The pipeline's
//! database steps (from its first `backup`/`migrate`/`validate`/`sql` step to its last)
//! run once per target, each target a run of its own with its own journal and lock, a few
//! at a time; the steps before and after them (maintenance, scaling, health) run once
//! around the fleet, in the fleet's own run. A canary stage and a failure budget bound the
//! damage a bad release can do. Nothing here schedules work across machines: `--shard i/n`
//! picks a slice of the targets, and runners coordinate through the targets' locks.

pub(crate) mod runner;
pub(crate) mod targets;

use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::config::pipeline::StepKind;
use crate::secret::Secret;

pub(crate) use runner::{FleetOutcome, FleetSettings, TargetStatus};
pub(crate) use targets::resolve;

/// One database of the fleet.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: Secret,
}

/// Where a target's journal and lock live.
pub(crate) fn target_state_dir(state_dir: &Path, environment: &str, target: &str) -> PathBuf {
    state_dir.join("targets").join(environment).join(target)
}

/// Names of the targets that have a state folder (they ran at least once).
pub(crate) fn known_targets(state_dir: &Path, environment: &str) -> Vec<String> {
    let dir = state_dir.join("targets").join(environment);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `--shard i/n`: the i-th of n slices (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid shard `{s}`: expected `i/n` with 1 <= i <= n, e.g. `2/4`");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The targets of this shard: sorted by name, every n-th from the i-th. Every runner
    /// of the matrix computes the same split from the same list.
    pub fn pick(self, mut targets: Vec<Target>) -> Vec<Target> {
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        targets
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index - 1)
            .map(|(_, t)| t)
            .collect()
    }
}

fn is_database_step(kind: StepKind) -> bool {
    matches!(
        kind,
        StepKind::Backup | StepKind::Migrate | StepKind::Validate | StepKind::Sql
    )
}

/// The indices of the steps that run per target: from the first database step to the
/// last. `None` when the pipeline has none.
pub(crate) fn per_target_range(pipeline: &Pipeline) -> Option<std::ops::Range<usize>> {
    let first = pipeline
        .steps
        .iter()
        .position(|s| is_database_step(s.kind()))?;
    let last = pipeline
        .steps
        .iter()
        .rposition(|s| is_database_step(s.kind()))?;
    Some(first..last + 1)
}
