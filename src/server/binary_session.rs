//! The binary protocol as a Session.

use super::Core;
use super::router::{self, ReplySlot};
use super::session::{After, Parse, Session};
use super::stats_command;
use crate::protocol::binary::{self, Command, Frame, Parsed, Status};
use crate::protocol::binary_reply;
use crate::request::{DeleteOptions, KeyOp, Outcome};
use crate::stats;

pub enum Step<'a> {
    Request {
        frame: Frame,
        command: Command<'a>,
    },
    Error {
        frame: Frame,
        status: Status,
        stale_key: Option<&'a [u8]>,
    },
    Close {
        frame: Option<Frame>,
        status: Status,
    },
}

pub struct BinarySession {
    /// Largest key + value accepted (`-I` less the item header).
    pub max_payload: usize,
}

impl Session for BinarySession {
    type Step<'a> = Step<'a>;

    fn parse<'a>(&self, buf: &'a [u8]) -> Parse<Step<'a>> {
        match binary::parse(buf, self.max_payload) {
            Parsed::Incomplete => Parse::Incomplete,
            Parsed::Request {
                frame,
                command,
                consumed,
            } => Parse::Step {
                last: command == Command::Quit,
                step: Step::Request { frame, command },
                consumed,
            },
            Parsed::Error {
                frame,
                status,
                consumed,
                skip,
                stale_key,
            } => Parse::Swallow {
                step: Step::Error {
                    frame,
                    status,
                    stale_key,
                },
                consumed,
                skip,
            },
            Parsed::Close { frame, status } => Parse::Close {
                step: Step::Close { frame, status },
            },
        }
    }

    fn is_barrier(step: &Step<'_>) -> bool {
        !matches!(
            step,
            Step::Request {
                command: Command::Keyed(_),
                ..
            } | Step::Error { .. }
        )
    }

    fn key_ops<'s>(step: &'s Step<'_>, ops: &mut Vec<KeyOp<&'s [u8]>>) -> usize {
        match step {
            Step::Request {
                command: Command::Keyed(op),
                ..
            } => {
                ops.push(op.clone());
                1
            }
            // A SET whose value was refused drops the old value, as memcached.
            Step::Error {
                stale_key: Some(key), ..
            } => {
                ops.push(KeyOp::Delete {
                    key,
                    options: DeleteOptions::default(),
                });
                1
            }
            _ => 0,
        }
    }

    fn write_outcome(step: &Step<'_>, key: &[u8], outcome: &Outcome<&[u8]>, out: &mut Vec<u8>) {
        if let Step::Request { frame, .. } = step {
            binary_reply::outcome(out, *frame, key, outcome);
        }
    }

    fn finish(step: &Step<'_>, out: &mut Vec<u8>) {
        if let Step::Error { frame, status, .. } = step {
            binary_reply::error(out, *frame, *status);
        }
    }

    async fn barrier<'s>(&self, core: &Core, reply_slot: &ReplySlot, step: &Self::Step<'s>, out: &mut Vec<u8>) -> After {
        let (frame, command) = match step {
            Step::Request { frame, command } => (*frame, command),
            Step::Close { frame, status } => {
                if let Some(frame) = frame {
                    binary_reply::error(out, *frame, *status);
                }
                return After::Close;
            }
            Step::Error { .. } => return After::Continue,
        };
        let quiet = frame.is_quiet();
        match *command {
            Command::Noop => binary_reply::success(out, frame, 0),
            Command::Verbosity { level } => {
                router::verbosity(core, reply_slot, level).await;
                binary_reply::success(out, frame, 0);
            }
            Command::Version => binary_reply::response(out, frame, Status::Success, 0, &[], &[], stats::VERSION.as_bytes()),
            Command::Quit => {
                if !quiet {
                    binary_reply::success(out, frame, 0);
                }
                return After::Close;
            }
            Command::Flush { delay } => {
                if !core.global.config.flush_enabled {
                    binary_reply::error(out, frame, Status::AuthError);
                } else if !router::flush_all(core, reply_slot, delay, Self::FORWARDS).await {
                    binary_reply::error(out, frame, Status::NotSupported);
                } else if !quiet {
                    binary_reply::success(out, frame, 0);
                }
            }
            Command::Stat { group } => {
                let known = if let Some(detail) = stats::Detail::of_group(group) {
                    match detail {
                        None => false,
                        Some(detail) => {
                            if let Some(dump) = stats_command::run_detail(detail, core, reply_slot).await {
                                binary_reply::response(out, frame, Status::Success, 0, &[], b"detailed", &dump);
                            }
                            true
                        }
                    }
                } else if group == b"reset" {
                    router::reset_stats(core, reply_slot).await;
                    true
                } else {
                    stats_command::write_group(out, core, reply_slot, group, &mut |out, name, value| {
                        binary_reply::stat(out, frame, name, value)
                    })
                    .await
                };
                if known {
                    binary_reply::stat(out, frame, "", "");
                } else {
                    binary_reply::error(out, frame, Status::KeyNotFound);
                }
            }
            Command::Keyed(_) => {}
        }
        After::Continue
    }
}
