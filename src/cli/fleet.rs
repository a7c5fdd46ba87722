//! `deploy --fleet`: the fleet's own run (the steps around the per-target part, once) with
//! the per-target part handed to the fleet runner as one step.

use std::sync::Mutex;

use serde_json::json;

use super::confirm::{self, Confirmation};
use super::exit::{Exit, eprint};
use super::session::Session;
use super::{DeployArgs, Global};
use crate::adapters::reference::Resolver;
use crate::app::fleet::{self, FleetOutcome, FleetSettings, Target, TargetStatus};
use crate::app::guard;
use crate::config::pipeline::{CommandWith, StepWith};
use crate::config::{ConfigError, Located, Pipeline};
use crate::engine::journal::{RunStatus, new_run_id};
use crate::engine::run::{self, Delegate};
use crate::engine::window::Direction;
use crate::engine::{EngineError, cancel, plan};
use crate::run::error::StepError;

/// The id of the step that stands for the per-target part in the fleet's own run.
const TARGETS_STEP: &str = "targets";

struct Phase<'a> {
    fleet: fleet::runner::Fleet<'a>,
    targets: Vec<Target>,
    outcome: Mutex<Option<FleetOutcome>>,
}

#[async_trait::async_trait]
impl Delegate for Phase<'_> {
    async fn run(&self) -> Result<String, StepError> {
        let outcome = self.fleet.run(&self.targets).await;
        let summary = outcome.summary();
        let stopped = outcome.stopped.clone();
        *self
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome);
        match stopped {
            Some(why) => Err(StepError::Failed(format!("{why}; {summary}"))),
            None if self.fleet.cancel.is_cancelled() => Err(StepError::Cancelled),
            None => Ok(summary),
        }
    }
}

pub(crate) async fn deploy(global: &Global, args: DeployArgs) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let bad = |why: String| -> EngineError {
        ConfigError::Invalid(Located::file(&session.config.path, why)).into()
    };
    // Two copies: the per-target part, and the fleet's own run around it.
    let mut per_target = session.pipeline(args.pipeline.as_deref())?;
    let mut outer = session.pipeline(args.pipeline.as_deref())?;
    let Some(range) = fleet::per_target_range(&per_target) else {
        return Err(bad(format!(
            "pipeline `{}` has no database step (backup, migrate, validate, sql) to run on each target",
            per_target.name
        )));
    };
    per_target.steps = per_target.steps.drain(range.clone()).collect();
    let mut placeholder = crate::app::builtin::step(
        TARGETS_STEP,
        StepWith::Command(CommandWith {
            run: "true".into(),
            undo: None,
        }),
    );
    placeholder.line = per_target.steps[0].line;
    outer.steps.splice(range.clone(), [placeholder]);
    if outer.steps.iter().filter(|s| s.id == TARGETS_STEP).count() > 1 {
        return Err(bad(format!(
            "pipeline `{}` has a step with the id `{TARGETS_STEP}`, which a fleet run uses for its per-target part",
            outer.name
        )));
    }
    let mut ctx = session.context(cancel::on_signals())?;
    let env = session.config.environment(&session.environment)?;
    let Some(spec) = env.targets.as_ref() else {
        return Err(bad(format!(
            "environment `{}` has no `targets:`; `deploy --fleet` needs them",
            session.environment
        )));
    };
    let settings = FleetSettings::from_config(spec);
    let resolver = Resolver {
        config_path: &session.config.path,
        base_dir: &session.config.dir,
        redactor: &ctx.redactor,
        azure: session
            .config
            .environment(&session.environment)?
            .azure
            .as_ref(),
    };
    let mut targets = fleet::resolve(&session.config, &session.environment, &resolver).await?;
    session.reporter.sync_secrets();
    if let Some(shard) = args.shard {
        targets = shard.pick(targets);
    }
    if !args.dry_run {
        guard::before_plan(&ctx).await?;
    }
    let mut shown = plan::build(&ctx, &outer, None).await?;
    let at = range.start;
    shown.steps[at].summary = format!(
        "run {} on each of {} target(s), {} at a time ({} canary first, failure budget {})",
        per_target
            .steps
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        targets.len(),
        settings.concurrency,
        settings.canary.min(targets.len()),
        settings.max_failures.allowed(targets.len()),
    );
    shown.steps[at].undo = None;
    session.reporter.plan(&shown);
    if args.dry_run {
        return Ok(Exit::Ok);
    }
    (ctx.outside_window, ctx.confirmed) = confirm::window_then_confirm(
        &session.config,
        &session.environment,
        (
            "`deploy --fleet`",
            Direction::Forward,
            args.window.reason.as_deref(),
        ),
        &Confirmation::asked(args.confirm, args.yes),
        &ctx.cancel,
    )
    .await?;
    let run_id = new_run_id();
    let locks = guard::lock_for_run(&ctx, &run_id, "deploy --fleet", true).await?;
    let phase = Phase {
        fleet: fleet::runner::Fleet {
            config: &session.config,
            environment: &session.environment,
            pipeline: &per_target,
            reporter: session.reporter.clone(),
            redactor: ctx.redactor.clone(),
            cancel: ctx.cancel.clone(),
            settings,
            run_id: run_id.clone(),
        },
        targets,
        outcome: Mutex::new(None),
    };
    let outcome =
        run::execute_delegating(&ctx, &outer, &shown, "deploy --fleet", run_id, at, &phase).await?;
    locks.release().await;
    let fleet = phase
        .outcome
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .unwrap_or_default();
    Ok(summarize(&session, &outer, &outcome, &fleet))
}

fn summarize(
    session: &Session,
    outer: &Pipeline,
    outcome: &run::RunOutcome,
    fleet: &FleetOutcome,
) -> Exit {
    let env = &session.environment;
    let worst_target = if fleet.targets.iter().any(|t| {
        matches!(
            t.status,
            TargetStatus::RollbackFailed | TargetStatus::Halted
        )
    }) {
        Exit::RollbackIncomplete
    } else if fleet.failures() > 0 {
        Exit::RolledBack
    } else {
        Exit::Ok
    };
    let exit =
        crate::app::outcome::for_run(outcome.status, outcome.interrupted).worst(worst_target);
    let value = json!({
        "fleet_run_id": outcome.run_id,
        "environment": env,
        "pipeline": outer.name,
        "status": outcome.status.as_str(),
        "stopped": fleet.stopped,
        "summary": fleet.summary(),
        "failed_step": outcome.failure.as_ref().map(|f| &f.0),
        "error": outcome.failure.as_ref().map(|f| &f.1),
        "undone": outcome.undone,
        "journal": outcome.journal.display().to_string(),
        "targets": fleet.targets,
    });
    let mut text = format!(
        "fleet run {} on {env}: {}\n",
        outcome.run_id,
        fleet.summary()
    );
    if let Some(why) = &fleet.stopped {
        text.push_str(&format!("stopped: {why}\n"));
    }
    for t in fleet.targets.iter().filter(|t| t.status.failed()) {
        text.push_str(&format!(
            "  {}: {}{}\n",
            t.target,
            t.status.as_str(),
            t.error
                .as_ref()
                .map(|e| format!(
                    " — {}{e}",
                    t.failed_step
                        .as_ref()
                        .map(|s| format!("step `{s}`: "))
                        .unwrap_or_default()
                ))
                .unwrap_or_default()
        ));
    }
    if outcome.status != RunStatus::Succeeded {
        let (step, error) = outcome.failure.clone().unwrap_or_default();
        text.push_str(&format!(
            "the fleet's own run failed at step `{step}`: {error}\nits steps were undone: {}\n",
            if outcome.undone.is_empty() {
                "nothing needed undoing".to_owned()
            } else {
                outcome.undone.join("; ")
            }
        ));
    }
    text.push_str(&format!(
        "journal: {}\nnext: {}",
        outcome.journal.display(),
        match exit {
            Exit::Ok => "nothing; every target is at the new version".to_owned(),
            Exit::RolledBack => format!(
                "fix the cause and run `cutover deploy --fleet -e {env}` again: targets already at the new version are skipped"
            ),
            _ => format!(
                "a human is needed: `cutover history -e {env} --target NAME` shows a target's runs; `cutover recover -e {env} --fleet` finishes what is left"
            ),
        }
    ));
    if session.json || exit == Exit::Ok {
        session.result(&value, &text);
    } else {
        session.result(&value, "");
        eprint(&format!("{}: {text}", super::exit::error_label()));
    }
    exit
}
