// Package schedule reads schedule files (docs/reference/schedules.md) and
// answers one question for the rest of TED: is a named schedule open at a
// given time, and when does its current or next window start and end. It also
// carries the per-schedule jitter and transfer rate, and the Clock that every
// time-dependent component is given.
//
// # Windows
//
// A window rule is a cron expression (robfig/cron/v3: 5 fields, an optional
// leading seconds field, or a descriptor such as @daily; @every is refused because
// it is not tied to the clock) and a duration. An opening f of the cron makes the
// schedule open on [f, f+duration). The duration is elapsed time, not wall-clock
// time: an 8h window opening at 22:00 on a DST night closes at 05:00 or 07:00.
//
// A schedule's open set is the union of all its windows' intervals minus the union
// of its blackouts' intervals. Windows that overlap or touch (several rules, or one
// rule whose openings are close together) MERGE: the Window reported for a time is
// the whole connected run, from the first opening of the run to the end of its last
// interval. A blackout cuts a window: a blackout in the middle of a run leaves two
// Windows, one ending where the blackout starts and one starting where it ends.
// A single rule whose duration is longer than the gap between two of its own
// consecutive openings is refused (it would be open for good; say always: true).
//
// # Time zones and DST
//
// Cron expressions are evaluated in the schedule's timezone (UTC when none is
// given); a cron line may override it with a CRON_TZ= or TZ= prefix. Daylight
// saving follows robfig/cron/v3 v3.0.1 exactly, which steps hours in absolute time:
//
//   - Spring forward (the skipped hour): an opening whose wall-clock time does not
//     exist that day does not happen at all that day. "30 2 * * *" in
//     America/New_York opens 2026-03-07 02:30 EST and then 2026-03-09 02:30 EDT;
//     there is no opening on 2026-03-08. It is not moved to 03:30.
//   - Fall back (the repeated hour): an opening inside the repeated hour happens
//     TWICE, once in each offset. "30 1 * * *" opens 2026-11-01 01:30 EDT and again
//     one hour later at 01:30 EST. An opening outside the repeated hour happens
//     once: "30 2 * * *" opens 2026-11-01 02:30 EST only. When the two openings'
//     intervals overlap they merge into one Window, as above.
//
// The duration check compares durations with the gaps of the cron pattern itself
// (as if in UTC), so a daily 24h window is accepted; on the short DST day it
// overlaps its next opening by an hour and the two merge.
//
// # Horizon
//
// Queries look at most five years ahead and behind (robfig/cron's own limit, and
// a cap on steps): a run still open five years on ends at a far-future sentinel
// (Window.Forever reports it), and a run that began more than five years back starts
// at the zero time. The built-in always schedule is such a run: {zero, forever}.
//
// # Never
//
// This package must never read the system clock except through SystemClock, never
// sleep or start goroutines of its own, and never open files other than the one
// given to Load. It decides whether a schedule is open; it never starts, stops or
// throttles transfers itself (Limiter hands callers a limiter to use).
package schedule
