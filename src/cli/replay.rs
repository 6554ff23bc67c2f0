//! `replay`: the log's records as JSON lines up to a point, or the actions' states as of it.
//!
//! Records are printed one line per operation, in the shape of `GET /api/v1/log`:
//! `{"position", "recorded_at", "principal", "event"}`. `--snapshots` prints one action per
//! line (the shape of `GET /api/v1/actions/{id}`) in id order, as it stood at the point —
//! what `GET /api/v1/actions/{id}?as_of=…` answers. The log is read with the same checking
//! scan `verify` uses.
//!
//! `--action ID` names one action: when the log (up to the stopping point) never created
//! it, replay fails (exit 2) naming it, like `GET /api/v1/actions/ID` answers 404.
//! `--resource TYPE/ID` is a filter, like a list's: no action on it prints nothing, exits
//! 0 and notes on stderr that nothing matched.

use super::check::{bytes_before, log_error, segment_sizes};
use super::{line, progress_bar, CliResult, DataDir, Failure};
use crate::event::{codec, fold, Action, ActionId, ActionRef, Micros, Op, ResourceRef};
use crate::json::{op_json, parse_time, rfc3339, ActionOut, RecordOut};
use crate::log::{self, FsStorage};
use clap::Args;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Stop after the last record recorded at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME", conflicts_with = "until_position")]
    pub until: Option<String>,
    /// Stop after this log position.
    #[arg(long, value_name = "N")]
    pub until_position: Option<u64>,
    /// Only this action (its id, or its uid).
    #[arg(long, value_name = "ID")]
    pub action: Option<String>,
    /// Only actions on this resource (primary or related), as TYPE/ID.
    #[arg(long, value_name = "TYPE/ID")]
    pub resource: Option<String>,
    /// Print the actions' states at that point instead of the records.
    #[arg(long)]
    pub snapshots: bool,
}

/// Where replay stops.
#[derive(Clone, Copy, Debug)]
enum Until {
    End,
    Position(u64),
    Time(Micros),
}

/// Which actions replay shows.
struct Filter {
    action: Option<ActionRef>,
    resource: Option<ResourceRef>,
}

impl Filter {
    /// Is `new` the action of `--action` (every action without it)?
    fn is_action(&self, new: &crate::event::NewAction) -> bool {
        match &self.action {
            None => true,
            Some(ActionRef::Id(id)) => new.id == *id,
            Some(ActionRef::Uid(uid)) => &new.uid == uid,
        }
    }

    fn wants_new(&self, new: &crate::event::NewAction) -> bool {
        let resource_ok = match &self.resource {
            None => true,
            Some(r) => new.resource == *r || new.related.contains(r),
        };
        self.is_action(new) && resource_ok
    }
}

/// Where replay stopped, for messages: "" at the end of the log.
fn up_to(until: Until) -> String {
    match until {
        Until::End => String::new(),
        Until::Position(p) => format!(" up to position {p}"),
        Until::Time(t) => format!(" up to {}", rfc3339(t)),
    }
}

fn parse_args(args: &ReplayArgs) -> Result<(Until, Filter), Failure> {
    let until = match (&args.until, args.until_position) {
        (Some(t), _) => Until::Time(parse_time(t).ok_or_else(|| {
            Failure::error(format!(
                "--until {t:?}: not an RFC 3339 time such as 2026-01-31T12:00:00Z"
            ))
        })?),
        (None, Some(p)) => Until::Position(p),
        (None, None) => Until::End,
    };
    let resource = match &args.resource {
        None => None,
        Some(r) => {
            let (t, id) = r
                .split_once('/')
                .filter(|(t, id)| !t.is_empty() && !id.is_empty())
                .ok_or_else(|| {
                    Failure::error(format!(
                        "--resource {r:?}: expected TYPE/ID, such as droplet/3164450"
                    ))
                })?;
            Some(ResourceRef {
                resource_type: t.to_string(),
                id: id.to_string(),
            })
        }
    };
    let action = match args.action.as_deref() {
        None => None,
        Some("") => return Err(Failure::error("--action: must not be empty")),
        Some(a) => Some(ActionRef::parse(a)),
    };
    Ok((until, Filter { action, resource }))
}

pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> CliResult {
    args.data.existing()?;
    let (until, filter) = parse_args(args)?;
    let log_dir = args.data.log_dir();
    let sizes = segment_sizes(&log_dir).map_err(log_error)?;
    let bar = progress_bar(sizes.iter().map(|(_, l)| l).sum(), "replaying");

    // Actions the filter selected (decided at their creation, which comes first in the log).
    let mut wanted: HashMap<ActionId, ()> = HashMap::new();
    // Whether the log created the action of `--action`.
    let mut action_found = false;
    // States of the selected actions (--snapshots).
    let mut states: BTreeMap<ActionId, Action> = BTreeMap::new();
    let mut failure: Option<Failure> = None;
    let mut stopped = false;
    let mut n = 0u64;
    let scanned = log::verify(&FsStorage, &log_dir, &mut |rec| {
        n += 1;
        if n % 4096 == 0 {
            bar.set_position(bytes_before(&sizes, rec.segment, rec.offset));
        }
        let position = rec.meta.position;
        if matches!(until, Until::Position(p) if position > p) {
            stopped = true;
            return Err("stop".into());
        }
        let entry = codec::decode_entry(rec.meta.kind, rec.meta.schema, rec.payload)
            .map_err(|e| e.to_string())?;
        if matches!(until, Until::Time(t) if entry.recorded_at > t) {
            stopped = true;
            return Err("stop".into());
        }
        for op in &entry.ops {
            if let Op::Create(new) = op {
                action_found |= filter.action.is_some() && filter.is_action(new);
                if filter.wants_new(new) {
                    wanted.insert(new.id, ());
                }
            }
        }
        if args.snapshots {
            let mut result = Ok(());
            let touched: Vec<ActionId> = entry
                .ops
                .iter()
                .map(Op::action_id)
                .filter(|id| wanted.contains_key(id))
                .collect();
            if touched.is_empty() {
                return Ok(());
            }
            // Fold only the selected actions' operations of this record.
            let mine = crate::event::Entry {
                ops: entry
                    .ops
                    .iter()
                    .filter(|op| wanted.contains_key(&op.action_id()))
                    .cloned()
                    .collect(),
                ..entry
            };
            match fold::apply_entry(&mine, position, |id| states.get(&id).cloned()) {
                Ok(after) => {
                    for a in after {
                        states.insert(a.id, a);
                    }
                }
                Err(e) => result = Err(format!("record {position} does not apply: {e}")),
            }
            return result;
        }
        for op in &entry.ops {
            if !wanted.contains_key(&op.action_id()) {
                continue;
            }
            let record = RecordOut {
                position,
                recorded_at: rfc3339(entry.recorded_at),
                principal: entry.principal.clone(),
                event: op_json(op),
            };
            let text = serde_json::to_string(&record).expect("records serialize");
            if let Err(e) = line(out, &text) {
                failure = Some(e);
                stopped = true;
                return Err("stop".into());
            }
        }
        Ok(())
    });
    bar.finish_and_clear();
    if let Some(f) = failure {
        return Err(f);
    }
    match scanned {
        Ok(_) => {}
        Err(_) if stopped => {}
        Err(e) => return Err(log_error(e)),
    }
    if let (Some(a), false) = (&args.action, action_found) {
        return Err(Failure::error(format!(
            "--action {a}: no such action in the log{}",
            up_to(until)
        )));
    }
    if wanted.is_empty() {
        if let Some(r) = &args.resource {
            eprintln!("note: no action on {r} in the log{}", up_to(until));
        }
    }
    if args.snapshots {
        for a in states.values() {
            let text = serde_json::to_string(&ActionOut::from(a)).expect("actions serialize");
            line(out, &text)?;
        }
    }
    Ok(())
}
