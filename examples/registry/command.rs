//! The registry's commands (what goes inside an engine entry) and the rules every name,
//! address and TTL obeys.
//!
//! ```text
//! command:    [version u8 = 1][kind u8][body]
//! register:   kind 1: [service str16][instance str16][address str32][ttl_ms u64]
//! deregister: kind 2: [service str16][instance str16]
//! expire:     kind 3: [service str16][instance str16][renewal_index u64]
//! ```
//! (`str16`, `str32`: see `codec.rs`.) The engine adds its own framing (format byte, request
//! ID) around these bytes.
//!
//! Invariants: [`Command::decode`] accepts exactly what [`Command::encode`] writes for a
//! command that passes [`check_name`], [`check_address`] and [`check_ttl`]; anything else is
//! [`Malformed`], which the state machine answers with `engine::Rejected` and applies as a
//! no-op on every replica alike. The API checks the same rules before proposing, so a client
//! mistake is a 400, never a committed no-op.

use crate::codec::{malformed, put_str16, put_str32, put_u64, Malformed, Reader};

/// The command format this release writes and reads.
const VERSION: u8 = 1;
const KIND_REGISTER: u8 = 1;
const KIND_DEREGISTER: u8 = 2;
const KIND_EXPIRE: u8 = 3;

/// Longest service or instance name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest instance address, in bytes (also the largest `PUT` body).
pub const MAX_ADDRESS_BYTES: usize = 4096;
/// Longest TTL: one hour. A longer one is almost surely a unit mistake.
pub const MAX_TTL_MS: u64 = 3_600_000;
/// TTL of a registration that names none.
pub const DEFAULT_TTL_MS: u64 = 10_000;

/// One registry command, borrowing its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Register or renew `instance` of `service` at `address`; its renewal index becomes the
    /// command's raft index.
    Register {
        /// Service name.
        service: &'a str,
        /// Instance name.
        instance: &'a str,
        /// Where the instance listens.
        address: &'a str,
        /// Time to live without a renewal.
        ttl_ms: u64,
    },
    /// Remove `instance` of `service`.
    Deregister {
        /// Service name.
        service: &'a str,
        /// Instance name.
        instance: &'a str,
    },
    /// Remove `instance` of `service` if it was not renewed since `renewal_index` (proposed by
    /// the leader when its timer fires).
    Expire {
        /// Service name.
        service: &'a str,
        /// Instance name.
        instance: &'a str,
        /// The renewal index the leader's timer saw.
        renewal_index: u64,
    },
}

impl<'a> Command<'a> {
    /// The command's bytes. The caller MUST have checked its names, address and TTL.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        match *self {
            Command::Register {
                service,
                instance,
                address,
                ttl_ms,
            } => {
                out.push(KIND_REGISTER);
                put_str16(&mut out, service);
                put_str16(&mut out, instance);
                put_str32(&mut out, address);
                put_u64(&mut out, ttl_ms);
            }
            Command::Deregister { service, instance } => {
                out.push(KIND_DEREGISTER);
                put_str16(&mut out, service);
                put_str16(&mut out, instance);
            }
            Command::Expire {
                service,
                instance,
                renewal_index,
            } => {
                out.push(KIND_EXPIRE);
                put_str16(&mut out, service);
                put_str16(&mut out, instance);
                put_u64(&mut out, renewal_index);
            }
        }
        out
    }

    /// Decodes [`Command::encode`]'s bytes, checking every rule.
    ///
    /// # Errors
    /// [`Malformed`] naming the first problem.
    pub fn decode(bytes: &'a [u8]) -> Result<Command<'a>, Malformed> {
        let mut r = Reader::new(bytes);
        let version = r.u8("the version byte")?;
        if version != VERSION {
            return Err(malformed(format!("unknown command version {version}")));
        }
        let kind = r.u8("the kind byte")?;
        let service = r.str16("the service name")?;
        let instance = r.str16("the instance name")?;
        check_name("service", service).map_err(Malformed)?;
        check_name("instance", instance).map_err(Malformed)?;
        let command = match kind {
            KIND_REGISTER => {
                let address = r.str32("the address")?;
                let ttl_ms = r.u64("the TTL")?;
                check_address(address).map_err(Malformed)?;
                check_ttl(ttl_ms).map_err(Malformed)?;
                Command::Register {
                    service,
                    instance,
                    address,
                    ttl_ms,
                }
            }
            KIND_DEREGISTER => Command::Deregister { service, instance },
            KIND_EXPIRE => Command::Expire {
                service,
                instance,
                renewal_index: r.u64("the renewal index")?,
            },
            other => return Err(malformed(format!("unknown command kind {other}"))),
        };
        r.finish("command")?;
        Ok(command)
    }
}

/// Checks a service or instance name (`what` says which): 1 to [`MAX_NAME_BYTES`] bytes of
/// ASCII letters, digits, `.`, `_`, `-` and `:`, so a name needs no escaping in a URL path.
///
/// # Errors
/// One sentence saying what to send instead.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "the {what} name is empty: use /services/<service>/<instance>"
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the {what} name has {} bytes: use at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if !name.chars().all(allowed) {
        return Err(format!(
            "the {what} name {name:?} has a character other than letters, digits, '.', '_', '-' \
             and ':': rename it"
        ));
    }
    Ok(())
}

/// Checks an instance address: 1 to [`MAX_ADDRESS_BYTES`] bytes of UTF-8 without control
/// characters.
///
/// # Errors
/// One sentence saying what to send instead.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("the body is empty: send the instance's address, e.g. 10.0.0.1:8080".into());
    }
    if address.len() > MAX_ADDRESS_BYTES {
        return Err(format!(
            "the address has {} bytes: send at most {MAX_ADDRESS_BYTES}",
            address.len()
        ));
    }
    if address.chars().any(char::is_control) {
        return Err("the address has a control character: send it on one line".into());
    }
    Ok(())
}

/// Checks a TTL: 1 ms to [`MAX_TTL_MS`].
///
/// # Errors
/// One sentence saying what to send instead.
pub fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(format!(
            "ttl_ms={ttl_ms} is out of range: use 1 to {MAX_TTL_MS} milliseconds"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command<'static>> {
        vec![
            Command::Register {
                service: "web",
                instance: "web-1",
                address: "10.0.0.1:80",
                ttl_ms: 500,
            },
            Command::Deregister {
                service: "web",
                instance: "web-1",
            },
            Command::Expire {
                service: "db",
                instance: "a:1",
                renewal_index: 42,
            },
        ]
    }

    // Intent: every command survives encode/decode; every truncation, a trailing byte, an
    // unknown version or kind, and rule-breaking fields are refused without panicking.
    #[test]
    fn round_trip_and_garbage() {
        for c in samples() {
            let bytes = c.encode();
            assert_eq!(Command::decode(&bytes).unwrap(), c);
            for cut in 0..bytes.len() {
                assert!(Command::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Command::decode(&longer).is_err());
            let mut version = bytes.clone();
            version[0] = 9;
            assert!(Command::decode(&version).is_err());
            let mut kind = bytes;
            kind[1] = 9;
            assert!(Command::decode(&kind).is_err());
        }
        let bad_ttl = Command::Register {
            service: "s",
            instance: "i",
            address: "a",
            ttl_ms: 0,
        };
        assert!(Command::decode(&bad_ttl.encode()).is_err());
        let bad_name = Command::Deregister {
            service: "a b",
            instance: "i",
        };
        assert!(Command::decode(&bad_name.encode()).is_err());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = Command::decode(&noise);
        }
    }

    // Intent: the rules refuse empty, long and oddly spelled names, empty and multi-line
    // addresses, and TTLs of 0 or above an hour, each with a sentence.
    #[test]
    fn rules() {
        assert!(check_name("service", "web-1.prod:eu_west").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(MAX_NAME_BYTES + 1)] {
            assert!(check_name("service", bad).is_err(), "{bad:?}");
        }
        assert!(check_address("10.0.0.1:80").is_ok());
        assert!(check_address("").is_err());
        assert!(check_address("a\nb").is_err());
        assert!(check_address(&"a".repeat(MAX_ADDRESS_BYTES + 1)).is_err());
        assert!(check_ttl(1).is_ok() && check_ttl(MAX_TTL_MS).is_ok());
        assert!(check_ttl(0).is_err() && check_ttl(MAX_TTL_MS + 1).is_err());
    }
}
