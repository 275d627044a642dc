//! The binary protocol's reply writer: every response frame is built here.

use super::binary::{Frame, HEADER_LEN, RESPONSE_MAGIC, Status, opcode};
use crate::request::{Outcome, Refusal};

/// Writes a whole response frame.
pub fn response(out: &mut Vec<u8>, frame: Frame, status: Status, cas: u64, extras: &[u8], key: &[u8], value: &[u8]) {
    out.reserve(HEADER_LEN + extras.len() + key.len() + value.len());
    out.push(RESPONSE_MAGIC);
    out.push(frame.opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0); // data type: raw bytes
    out.extend_from_slice(&(status as u16).to_be_bytes());
    out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    // The opaque is echoed byte for byte.
    out.extend_from_slice(&frame.opaque.to_ne_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// A success with nothing but the header (and a CAS where one applies).
pub fn success(out: &mut Vec<u8>, frame: Frame, cas: u64) {
    response(out, frame, Status::Success, cas, &[], &[], &[]);
}

/// An error with memcached's message as the body.
pub fn error(out: &mut Vec<u8>, frame: Frame, status: Status) {
    response(out, frame, status, 0, &[], &[], status.message().as_bytes());
}

/// One `stat` entry (an empty name ends the list).
pub fn stat(out: &mut Vec<u8>, frame: Frame, name: &str, value: &str) {
    response(out, frame, Status::Success, 0, &[], name.as_bytes(), value.as_bytes());
}

/// The response to a single-key request, or nothing where quiet opcodes
/// stay silent.
pub fn outcome(out: &mut Vec<u8>, frame: Frame, key: &[u8], outcome: &Outcome<&[u8]>) {
    use opcode::*;
    let quiet = frame.is_quiet();
    match *outcome {
        Outcome::Hit { info, value } => {
            let flags = info.client_flags.to_be_bytes();
            let key = if frame.returns_key() { key } else { &[] };
            let value = if frame.opcode == TOUCH { &[] } else { value };
            response(out, frame, Status::Success, info.cas, &flags, key, value);
        }
        Outcome::Miss if quiet => {}
        // GETK answers a miss with the key instead of a message.
        Outcome::Miss if frame.returns_key() => response(out, frame, Status::KeyNotFound, 0, &[], key, &[]),
        Outcome::Miss => error(out, frame, Status::KeyNotFound),
        Outcome::Stored { cas, .. } | Outcome::Touched { cas } => {
            if !quiet {
                success(out, frame, cas);
            }
        }
        Outcome::Deleted => {
            if !quiet {
                success(out, frame, 0);
            }
        }
        Outcome::Number { value, cas, .. } => {
            if !quiet {
                response(out, frame, Status::Success, cas, &[], &[], &value.to_be_bytes());
            }
        }
        Outcome::NotStored => {
            let status = match frame.opcode {
                ADD | ADDQ => Status::KeyExists,
                REPLACE | REPLACEQ => Status::KeyNotFound,
                _ => Status::ItemNotStored,
            };
            error(out, frame, status);
        }
        Outcome::Exists => error(out, frame, Status::KeyExists),
        Outcome::NotFound => error(out, frame, Status::KeyNotFound),
        Outcome::NonNumeric => error(out, frame, Status::NonNumeric),
        Outcome::TooLarge => error(out, frame, Status::ValueTooLarge),
        Outcome::OutOfMemory => error(out, frame, Status::OutOfMemory),
        Outcome::Refused(refusal) => {
            let status = match refusal {
                Refusal::ReadOnly => Status::NotSupported,
                Refusal::NotActing | Refusal::Unreachable | Refusal::NoMajority | Refusal::Handover => Status::TemporaryFailure,
            };
            response(out, frame, status, 0, &[], &[], refusal.message().as_bytes());
        }
    }
}
