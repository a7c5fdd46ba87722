//! Rehearsal: the database part of a release, run on a copy of today's data before the
//! window opens. Its result decides how the real run rolls back (`rollback: auto` uses the
//! down files only where the rehearsal proved them lossless) and tells the approver how
//! long the window will be; a migration, `sql` step or validation check that fails on the
//! copy stops the deploy before anything on production is touched.
//!
//! [`crate::rehearsal_record`] is the result as data (what the plan reads), [`run`] makes
//! one, and [`leftover`] finds and drops the copies of rehearsals that were killed.
//! [`roundtrip`] is `cutover migrate test`: every migration up, down and up again on a
//! scratch database, schemas compared.

pub(crate) mod leftover;
pub(crate) mod roundtrip;
pub(crate) mod run;
