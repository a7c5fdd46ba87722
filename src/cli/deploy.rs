//! `deploy`, `release` and `rollback`: plan, confirm, lock, re-plan, execute.

use serde_json::json;

use super::confirm::{self, Confirmation};
use super::exit::{Exit, eprint};
use super::session::Session;
use super::{DeployArgs, Global, ReleaseArgs, ResumeArgs, RollbackArgs};
use crate::app::builtin::database_pipeline;
use crate::app::guard::{self, check_window};
use crate::app::outcome;
use crate::config::pipeline::StepWith;
use crate::config::{ConfigError, Located, Pipeline};
use crate::engine::journal::{RunRecord, RunStatus, halted_runs};
use crate::engine::plan;
use crate::engine::run::{self, RunOutcome};
use crate::engine::verify::StateCheck;
use crate::engine::window::Direction;
use crate::engine::{Context, EngineError, cancel, shared_state};
use crate::rehearsal_record::Standing;
use crate::run::plan::Plan;
use crate::run::plan::RollbackTarget;

pub(crate) async fn deploy(global: &Global, args: DeployArgs) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let pipeline = session.pipeline(args.pipeline.as_deref())?;
    let approved = args.plan.as_deref().map(read_approved).transpose()?;
    let confirmation = Confirmation {
        named: args.confirm,
        yes: args.yes,
        implied: false,
        approved,
        outside_window: args.window.reason,
    };
    run_pipeline(
        &session,
        &pipeline,
        &confirmation,
        "deploy",
        None,
        args.dry_run,
    )
    .await
}

pub(crate) async fn release(global: &Global, args: ReleaseArgs) -> Result<Exit, EngineError> {
    use crate::adapters::platform::heroku;
    let mut global = global.clone();
    if global.env.is_none() {
        let config = super::session::load_config(&global)?;
        global.env = Some(release_environment(&config)?);
    }
    let session = Session::open(&global)?;
    let mut pipeline = session.pipeline(args.pipeline.as_deref())?;
    // Heroku stops a release phase after an hour, mid-rollback if need be: a pipeline with
    // no limit of its own stops itself five minutes short of that and rolls back in time.
    let limit = *pipeline
        .timeout
        .get_or_insert(crate::config::duration::Duration(heroku::RELEASE_TIMEOUT));
    if limit.get() >= heroku::RELEASE_PHASE_LIMIT {
        eprint(&format!(
            "warning: pipeline `{}` may run for {limit}, but Heroku stops a release phase after {}; a run cut off there cannot finish its rollback",
            pipeline.name,
            humantime::format_duration(heroku::RELEASE_PHASE_LIMIT)
        ));
    }
    tracing::debug!(
        "release: environment `{}`, pipeline `{}`, run time limit {limit}",
        session.environment,
        pipeline.name
    );
    // The release phase is the deploy trigger: the Procfile entry is the confirmation,
    // and nothing prompts.
    let confirmation = Confirmation {
        named: None,
        yes: true,
        implied: true,
        approved: None,
        outside_window: args.window.reason,
    };
    run_pipeline(&session, &pipeline, &confirmation, "release", None, false).await
}

/// Reads a plan saved by `plan --out`: its environment and digest are what was approved,
/// by whom its `approval` says (plans saved before approvals were recorded: by whoever
/// passes the file). An approval past its expiry is refused.
fn read_approved(path: &std::path::Path) -> Result<(String, String, String), EngineError> {
    let bad = |why: String| EngineError::Config(ConfigError::Invalid(Located::file(path, why)));
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read the approved plan: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("not a plan written by `cutover plan --out`: {e}")))?;
    match (
        value["environment"].as_str(),
        value["digest"].as_str(),
        value["format"].as_u64(),
    ) {
        (Some(env), Some(digest), Some(1)) => {
            let approval = &value["approval"];
            let by = approval["by"]
                .as_str()
                .map_or_else(|| "whoever passed the file".to_owned(), str::to_owned);
            if let Some(expires) = approval["expires_at"].as_str() {
                let expires = chrono::DateTime::parse_from_rfc3339(expires)
                    .map_err(|e| bad(format!("`approval.expires_at` is not a time: {e}")))?;
                if expires < chrono::Utc::now() {
                    return Err(bad(format!(
                        "the approval by {by} expired at {}; make a new plan (`cutover plan --out FILE --approved-by NAME`) and have it approved",
                        expires
                            .with_timezone(&chrono::Utc)
                            .format("%Y-%m-%d %H:%M UTC")
                    )));
                }
            }
            Ok((env.to_owned(), digest.to_owned(), by))
        }
        _ => Err(bad(
            "not a plan written by `cutover plan --out` (format 1)".into()
        )),
    }
}

/// `release` picks `heroku`, else the only environment marked `release: true`.
fn release_environment(config: &crate::config::Config) -> Result<String, EngineError> {
    let envs = &config.file.environments;
    if envs.contains_key("heroku") {
        return Ok("heroku".into());
    }
    let marked: Vec<_> = envs
        .iter()
        .filter(|(_, e)| e.release)
        .map(|(n, _)| n.clone())
        .collect();
    match marked.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ConfigError::Invalid(Located::file(
            &config.path,
            "`cutover release` needs CUTOVER_ENV, an environment named `heroku`, or exactly one environment with `release: true`".into(),
        ))
        .into()),
    }
}

pub(crate) async fn rollback(global: &Global, args: RollbackArgs) -> Result<Exit, EngineError> {
    let mut session = Session::open(global)?;
    if let Some(release) = &args.release {
        let schema = release_schema(&session, release).await?;
        // Every `traffic` step of the rollback pipeline that names no version goes to it.
        session.code_version = Some(release.clone());
        return roll_back_release(&session, &args, release, schema).await;
    }
    let target = match (args.to, args.backup) {
        (_, Some(id)) => RollbackTarget::Backup(id),
        (Some(0), None) => RollbackTarget::Version(None),
        (Some(v), None) => RollbackTarget::Version(Some(v)),
        (None, None) => {
            let confirmation = Confirmation {
                outside_window: args.window.reason,
                ..Confirmation::asked(args.confirm, args.yes)
            };
            return roll_back_halted(&session, &confirmation).await;
        }
    };
    let pipeline = rollback_pipeline(&session, args.pipeline.as_deref(), &target)?;
    let confirmation = Confirmation {
        outside_window: args.window.reason,
        ..Confirmation::asked(args.confirm, args.yes)
    };
    run_pipeline(
        &session,
        &pipeline,
        &confirmation,
        "rollback",
        Some(target),
        false,
    )
    .await
}

/// The pipeline a rollback runs: `-p`, else `rollback.yaml` beside the deploy pipeline,
/// else just the database step.
fn rollback_pipeline(
    session: &Session,
    explicit: Option<&std::path::Path>,
    target: &RollbackTarget,
) -> Result<crate::config::Pipeline, EngineError> {
    if let Some(p) = explicit {
        return session.pipeline(Some(p));
    }
    let beside = session
        .config
        .pipeline_path(None)
        .with_file_name("rollback.yaml");
    if beside.exists() {
        session.pipeline(Some(&beside))
    } else {
        Ok(database_pipeline(target, "rollback"))
    }
}

/// The schema version code `release` ran on, from the journal of the run that released
/// it.
async fn release_schema(session: &Session, release: &str) -> Result<Option<i64>, EngineError> {
    let ctx = session.context(tokio_util::sync::CancellationToken::new())?;
    let applied: Vec<i64> = ctx
        .database
        .state()
        .await
        .map_err(|e| EngineError::Plan(format!("cannot read the database: {e}")))?
        .applied
        .iter()
        .map(|m| m.version)
        .collect();
    crate::engine::provenance::release_schema(&ctx.state_dir, &ctx.environment, release, &applied)
        .map_err(|e| EngineError::Plan(e.to_string()))?
        .map(|r| r.schema)
        .ok_or_else(|| {
            EngineError::Plan(format!(
                "no run in `{env}` released code {release} or moved the traffic off it, so the schema it ran on is not known: `cutover history -e {env}` lists the releases; `cutover rollback --to VERSION` goes back by schema alone",
                env = ctx.environment
            ))
        })
}

/// `rollback --release`: the code first (the earlier code runs on the newer schema,
/// which only added to it), then the schema back to the version that code ran on. The
/// rollback pipeline beside the deploy pipeline is used when there is one; a `traffic`
/// step is put first when it has none.
async fn roll_back_release(
    session: &Session,
    args: &RollbackArgs,
    release: &str,
    schema: Option<i64>,
) -> Result<Exit, EngineError> {
    let target = RollbackTarget::Version(schema);
    let mut pipeline = rollback_pipeline(session, args.pipeline.as_deref(), &target)?;
    if !pipeline
        .steps
        .iter()
        .any(|s| matches!(s.with, crate::config::pipeline::StepWith::Traffic(_)))
    {
        pipeline.steps.insert(
            0,
            crate::app::builtin::step(
                "code",
                crate::config::pipeline::StepWith::Traffic(
                    crate::config::pipeline::TrafficWith::default(),
                ),
            ),
        );
    }
    tracing::debug!(release, ?schema, "rolling back a release");
    let confirmation = Confirmation {
        outside_window: args.window.reason.clone(),
        ..Confirmation::asked(args.confirm.clone(), args.yes)
    };
    run_pipeline(
        session,
        &pipeline,
        &confirmation,
        "rollback",
        Some(target),
        false,
    )
    .await
}

/// Plans, confirms, locks, re-plans and executes a pipeline.
pub(crate) async fn run_pipeline(
    session: &Session,
    pipeline: &Pipeline,
    confirmation: &Confirmation,
    command: &str,
    target: Option<RollbackTarget>,
    dry_run: bool,
) -> Result<Exit, EngineError> {
    let ctx = session.context(cancel::on_signals())?;
    run_pipeline_in(
        session,
        ctx,
        pipeline,
        confirmation,
        command,
        target,
        dry_run,
    )
    .await
}

/// [`run_pipeline`] in a context the caller already opened (and read from).
pub(crate) async fn run_pipeline_in(
    session: &Session,
    mut ctx: Context,
    pipeline: &Pipeline,
    confirmation: &Confirmation,
    command: &str,
    target: Option<RollbackTarget>,
    dry_run: bool,
) -> Result<Exit, EngineError> {
    if !dry_run {
        guard::before_plan(&ctx).await?;
    }
    if target.is_none() {
        let config = session.config.environment(&session.environment)?.rehearse;
        ctx.rehearsal = crate::rehearsal::run::standing_now(&ctx, config, pipeline).await;
        if !dry_run && !matches!(ctx.rehearsal, Standing::Current(_) | Standing::Off) {
            // Rehearsed before the plan is shown, once a first plan found no bad input:
            // the plan says what the copy showed, and a release that fails on the copy
            // stops here, before the window.
            plan::build(&ctx, pipeline, None).await?;
            let standing = std::mem::take(&mut ctx.rehearsal);
            ctx.rehearsal =
                crate::rehearsal::run::before_deploy(&ctx, config, pipeline, standing).await?;
        }
    }
    // When no one is asked to confirm, nothing can change between showing the plan and
    // running it but what the lock keeps out: the lock comes first and the plan is built
    // once, under it. Otherwise the plan is built again under the lock and must match the
    // one shown.
    let env = session.config.environment(&session.environment)?;
    let early =
        if dry_run || confirmation.approved.is_some() || confirm::asks(env.confirm, confirmation) {
            None
        } else {
            let run_id = crate::engine::journal::new_run_id();
            let locks = guard::lock_for_run(&ctx, &run_id, command, true).await?;
            Some((run_id, locks))
        };
    let shown = plan::build(&ctx, pipeline, target.as_ref()).await?;
    session.reporter.plan(&shown);
    if dry_run {
        return Ok(Exit::Ok);
    }
    let current = shown.database.current_version;
    let direction = match &target {
        Some(RollbackTarget::Version(to)) => Direction::toward(*to, current),
        Some(RollbackTarget::Backup(_)) => Direction::Back,
        // A pipeline that only takes backups reads production and changes nothing.
        None if pipeline
            .steps
            .iter()
            .all(|s| matches!(s.with, StepWith::Backup(_))) =>
        {
            Direction::Back
        }
        None => Direction::Forward,
    };
    let what = match (&target, current) {
        (Some(RollbackTarget::Version(Some(to))), Some(current)) => {
            format!("`{command} --to {to}` (newer than the current version {current})")
        }
        _ => format!("`{command}`"),
    };
    ctx.outside_window = check_window(
        &session.config,
        &session.environment,
        &what,
        direction,
        confirmation.outside_window.as_deref(),
    )?;
    if let Some((environment, digest, by)) = &confirmation.approved {
        if *environment != session.environment || *digest != shown.digest {
            return Err(EngineError::PlanChanged(format!(
                "  - the approved plan was for `{environment}` with digest {digest}; the plan now is for `{}` with digest {}\n  - run `cutover plan` again and have the new plan approved",
                session.environment, shown.digest
            )));
        }
        ctx.confirmed = Some(format!("the plan {digest} approved by {by}"));
    } else {
        ctx.confirmed =
            confirm::confirm(env.confirm, &session.environment, confirmation, &ctx.cancel).await?;
    }
    let (run_id, locks, now) = if let Some((run_id, locks)) = early {
        (run_id, locks, shown)
    } else {
        let run_id = crate::engine::journal::new_run_id();
        let locks = guard::lock_for_run(&ctx, &run_id, command, true).await?;
        let now = plan::build(&ctx, pipeline, target.as_ref()).await?;
        if now.digest != shown.digest {
            return Err(EngineError::PlanChanged(
                plan::differences(&shown, &now)
                    .iter()
                    .map(|d| format!("  - {d}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        (run_id, locks, now)
    };
    let decider = super::ask::Terminal {
        cancel: ctx.cancel.clone(),
    };
    let outcome = run::execute(&ctx, pipeline, &now, command, run_id, target, &decider).await?;
    locks.release().await;
    Ok(summarize(session, &ctx, &now, &outcome, command))
}

/// The closing message: what happened, what rollback did, the state left, what next.
pub(crate) fn summarize(
    session: &Session,
    ctx: &Context,
    plan: &Plan,
    outcome: &RunOutcome,
    command: &str,
) -> Exit {
    // The run report (`--report`, the CI summary and outputs) gets the outcome first.
    let schema_now = super::session::record_outcome(ctx, plan, outcome);
    let env = &ctx.environment;
    let value = json!({
        "run_id": outcome.run_id,
        "environment": env,
        "status": outcome.status.as_str(),
        "failed_step": outcome.failure.as_ref().map(|f| &f.0),
        "error": outcome.failure.as_ref().map(|f| &f.1),
        "undone": outcome.undone,
        "left": outcome.left,
        "results": outcome.results.iter().map(|(id, m)| json!({"step": id, "result": m})).collect::<Vec<_>>(),
        "journal": outcome.journal.display().to_string(),
        "schema_version_before": plan.database.current_version,
        "state_check": state_check_json(outcome.state_check.as_ref()),
        "backup": outcome.backup,
    });
    let journal = outcome.journal.display();
    let exit = outcome::for_run(outcome.status, outcome.interrupted);
    let text = match outcome.status {
        RunStatus::Succeeded => format!(
            "{} (run {}, journal {journal})",
            done(
                command,
                env,
                outcome.backup.as_deref(),
                schema_now.as_deref()
            ),
            outcome.run_id
        ),
        RunStatus::RolledBack => {
            let (step, error) = outcome.failure.clone().unwrap_or_default();
            format!(
                "{} failed at step `{step}`: {error}\nrolled back: {}\nstate: {}\njournal: {journal}\nnext: fix the cause and deploy again; see runbooks/deploy.md",
                if outcome.interrupted {
                    "interrupted: the run"
                } else {
                    "the run"
                },
                if outcome.undone.is_empty() {
                    "nothing needed undoing".to_owned()
                } else {
                    outcome.undone.join("; ")
                },
                state_line(outcome, plan),
            )
        }
        RunStatus::Halted => halted_text(env, outcome),
        RunStatus::RollbackFailed => {
            let (step, error) = outcome.failure.clone().unwrap_or_default();
            format!(
                "the run failed at step `{step}`: {error}\nROLLBACK INCOMPLETE — a human is needed.\nundone: {}\nstill to undo: {}\njournal: {journal}\nnext: {}",
                if outcome.undone.is_empty() {
                    "nothing".to_owned()
                } else {
                    outcome.undone.join("; ")
                },
                outcome.left.join("; "),
                incomplete_next(env, outcome),
            )
        }
    };
    if session.json || exit == Exit::Ok {
        session.result(&value, &text);
    } else {
        eprint(&format!("{}: {text}", super::exit::error_label()));
    }
    exit
}

/// What a run that succeeded did, in the words of its command; the schema version only as
/// the database said it after the run.
fn done(command: &str, env: &str, backup: Option<&str>, schema_now: Option<&str>) -> String {
    let schema = schema_now.map(|s| format!(", {s}")).unwrap_or_default();
    match command {
        "rollback" => format!("rolled back {env}{schema}"),
        "migrate up" => format!("migrated {env} up{schema}"),
        "migrate down" => format!("migrated {env} down{schema}"),
        "backup restore" => format!("restored {env} from the backup{schema}"),
        "backup create" => match backup {
            Some(id) => format!("took backup {id} of {env}"),
            None => format!("took a backup of {env}"),
        },
        _ => format!("deployed to {env}"),
    }
}

/// The state a clean rollback left, as far as the comparison with the fingerprint from
/// before the run shows; never more.
fn state_line(outcome: &RunOutcome, plan: &Plan) -> String {
    let schema = plan
        .database
        .current_version
        .map_or_else(|| "an empty schema".into(), |v| v.to_string());
    match &outcome.state_check {
        Some(StateCheck::Same(c)) => format!(
            "as before the run (schema at {schema}), checked: {} identical to before the run",
            c.covered()
        ),
        Some(StateCheck::NotCompared(reason)) => {
            format!("every undo action ran; NOT verified to be as before the run: {reason}")
        }
        Some(StateCheck::Differs(c)) if !outcome.kept.is_empty() => format!(
            "NOT as before the run, as the pipeline chose: step(s) {} have no undo and keep their changes; compared with before the run: {}",
            outcome
                .kept
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
            c.differences
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        // A clean rollback always carries a check; say so rather than claim.
        Some(StateCheck::Differs(_)) | None => {
            "every undo action ran; not compared with before the run".to_owned()
        }
    }
}

/// The next step after an incomplete rollback: put the data back from the run's backup
/// when the database differs, else finish the undo.
fn incomplete_next(env: &str, outcome: &RunOutcome) -> String {
    match (&outcome.state_check, &outcome.backup) {
        (Some(StateCheck::Differs(_) | StateCheck::NotCompared(_)), Some(backup)) => format!(
            "the database differs from before the run; restore the backup this run took before it changed anything: `cutover backup restore {backup} -e {env}` (see runbooks/rollback-by-hand.md), then check it with `cutover migrate status -e {env}`"
        ),
        (Some(StateCheck::Differs(_) | StateCheck::NotCompared(_)), None) => format!(
            "the database differs from before the run and this run took no backup; restore the newest backup from before it (`cutover backup list -e {env}`) or repair by hand: runbooks/rollback-by-hand.md"
        ),
        _ => format!(
            "follow runbooks/rollback-by-hand.md, fix what blocked the undo, then run `cutover recover -e {env}` to retry the rest"
        ),
    }
}

/// The comparison after a rollback, for JSON output.
pub(crate) fn state_check_json(check: Option<&StateCheck>) -> serde_json::Value {
    match check {
        None => serde_json::Value::Null,
        Some(StateCheck::Same(c)) => {
            json!({"result": "same", "covered": c.covered(), "comparison": c})
        }
        Some(StateCheck::Differs(c)) => {
            json!({"result": "differs", "covered": c.covered(), "comparison": c})
        }
        Some(StateCheck::NotCompared(reason)) => {
            json!({"result": "not_compared", "reason": reason})
        }
    }
}

/// What a halted run left, and the commands that go on from there.
fn halted_text(env: &str, outcome: &RunOutcome) -> String {
    let (step, error) = outcome.failure.clone().unwrap_or_default();
    let at = outcome.halted_at.clone().unwrap_or_default();
    format!(
        "the run failed at step `{step}`: {error}\nHALTED for a human, resumable at step `{at}`.\ndone and still in place: {}\nundone: {}\njournal: {}\nnext: `cutover resume -e {env}` continues at step `{at}`; `cutover rollback -e {env}` undoes the run; `cutover status -e {env}` shows it (see runbooks/halted-run.md)",
        if outcome.results.is_empty() {
            "(see the journal)".to_owned()
        } else {
            outcome
                .results
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
        if outcome.undone.is_empty() {
            "nothing".to_owned()
        } else {
            outcome.undone.join("; ")
        },
        outcome.journal.display(),
    )
}

/// The environment's halted run, or bad input naming what there is instead.
fn the_halted_run(ctx: &Context, what: &str) -> Result<RunRecord, EngineError> {
    halted_runs(&ctx.state_dir, &ctx.environment)?
        .pop()
        .ok_or_else(|| {
            EngineError::Plan(format!(
                "no halted run in `{}` to {what}; `cutover status -e {}` shows the environment's runs{}",
                ctx.environment,
                ctx.environment,
                if what == "roll back" {
                    " (to roll the database back to a version or a backup, give `--to VERSION` or `--backup ID`)"
                } else {
                    ""
                }
            ))
        })
}

/// `cutover resume`: continues the environment's halted run at the step it halted at.
pub(crate) async fn resume(global: &Global, args: ResumeArgs) -> Result<Exit, EngineError> {
    let session = Session::open(global)?;
    let pipeline = session.pipeline(args.pipeline.as_deref())?;
    let mut ctx = session.context(cancel::on_signals())?;
    // A halted run of another runner sharing the state is in the shared journals.
    shared_state::sync(&ctx, true).await?;
    let halted = the_halted_run(&ctx, "resume")?;
    if let Some(halt) = halted.halted() {
        let pause = pipeline
            .steps
            .get(halt.resume_from)
            .and_then(|s| match &s.with {
                crate::config::pipeline::StepWith::Pause(w) => Some(w),
                _ => None,
            });
        match (pause, args.approve) {
            (Some(_), false) => {
                return Err(EngineError::Plan(format!(
                    "run {} waits for approval at step `{}`: `cutover resume -e {env} --approve --by NAME` goes on, `cutover rollback -e {env}` undoes it",
                    halted.run_id(),
                    halt.step,
                    env = ctx.environment
                )));
            }
            (None, true) => {
                return Err(EngineError::Plan(format!(
                    "run {} halted at step `{}` ({}), not at a `pause`: there is nothing to approve; `cutover resume` without `--approve` goes on",
                    halted.run_id(),
                    halt.step,
                    halt.reason
                )));
            }
            (Some(with), true) => {
                let by = args.by.clone().unwrap_or_default();
                let deadline = halt.at
                    + chrono::Duration::from_std(with.timeout()).unwrap_or(chrono::Duration::MAX);
                if chrono::Utc::now() > deadline {
                    // Too late: the pause's timeout has passed, and a pause that times
                    // out rolls back.
                    session.reporter.event(&crate::run::event::Event::Warning {
                        message: format!(
                            "the approval by {by} came after the pause's timeout ({} after it halted, at {}): the run is rolled back instead",
                            humantime::format_duration(with.timeout()),
                            deadline.format("%Y-%m-%d %H:%M:%S UTC")
                        ),
                    });
                    // The release did not go on: exit as a rolled-back run does.
                    return roll_back_halted(
                        &session,
                        &Confirmation::asked(args.confirm.clone(), args.yes),
                    )
                    .await
                    .map(|exit| {
                        if exit == Exit::Ok {
                            Exit::RolledBack
                        } else {
                            exit
                        }
                    });
                }
                ctx.approved = Some(by);
            }
            (None, false) => {}
        }
    }
    let plan = plan::build(&ctx, &pipeline, None).await?;
    session.reporter.plan(&plan);
    // Resuming goes on the way the run was going: a rollback, `migrate down` or restore
    // goes back at any hour; anything else moves forward.
    let direction = match halted.command() {
        Some("rollback" | "migrate down" | "backup restore") => Direction::Back,
        _ => Direction::Forward,
    };
    (ctx.outside_window, ctx.confirmed) = confirm::window_then_confirm(
        &session.config,
        &session.environment,
        ("`resume`", direction, args.window.reason.as_deref()),
        &Confirmation::asked(args.confirm, args.yes),
        &ctx.cancel,
    )
    .await?;
    let locks = guard::lock_for_run(&ctx, &halted.run_id(), "resume", false).await?;
    // Read again under the lock: someone may have resumed or rolled it back meanwhile.
    let halted = RunRecord::read(&halted.path)?;
    let decider = super::ask::Terminal {
        cancel: ctx.cancel.clone(),
    };
    let outcome = run::resume(&ctx, &pipeline, &plan, &halted, &decider).await?;
    locks.release().await;
    Ok(summarize(&session, &ctx, &plan, &outcome, "resume"))
}

/// `cutover rollback` with no target: undoes the environment's halted run.
async fn roll_back_halted(
    session: &Session,
    confirmation: &Confirmation,
) -> Result<Exit, EngineError> {
    let mut ctx = session.context(cancel::on_signals())?;
    shared_state::sync(&ctx, true).await?;
    let halted = the_halted_run(&ctx, "roll back")?;
    (ctx.outside_window, ctx.confirmed) = confirm::window_then_confirm(
        &session.config,
        &session.environment,
        (
            "`rollback`",
            Direction::Back,
            confirmation.outside_window.as_deref(),
        ),
        confirmation,
        &ctx.cancel,
    )
    .await?;
    let locks = guard::lock_for_run(&ctx, &halted.run_id(), "rollback", false).await?;
    let halted = RunRecord::read(&halted.path)?;
    let outcome = crate::engine::recover::roll_back_halted(&ctx, &halted).await?;
    locks.release().await;
    let undone = if outcome.undone.is_empty() {
        "nothing needed undoing".to_owned()
    } else {
        outcome.undone.join("; ")
    };
    let value = json!({
        "run_id": outcome.run_id,
        "environment": ctx.environment,
        "status": outcome.status.as_str(),
        "undone": outcome.undone,
        "left": outcome.left,
        "journal": outcome.journal.display().to_string(),
    });
    let exit = outcome::for_undo(outcome.status);
    if exit == Exit::Ok {
        session.result(
            &value,
            &format!(
                "halted run {} rolled back: {undone}\njournal: {}",
                outcome.run_id,
                outcome.journal.display()
            ),
        );
    } else {
        eprint(&format!(
            "{}: rolling back halted run {}: ROLLBACK INCOMPLETE — a human is needed.\nundone: {undone}\nstill to undo: {}\nnext: follow runbooks/rollback-by-hand.md, then run `cutover recover -e {}`",
            super::exit::error_label(),
            outcome.run_id,
            outcome.left.join("; "),
            ctx.environment
        ));
        if session.json {
            session.result(&value, "");
        }
    }
    Ok(exit)
}
