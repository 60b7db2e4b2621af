//! What each request is: modes, key names and values.
//!
//! Keys are `{prefix}{n}` on the raftexample route `/{key}`. In put mode `n` is the run-wide
//! request ticket, so every PUT writes a key no other request of the run writes. In the get
//! modes `n` is drawn uniformly from `0..keys`, the keys preloaded before the timed run.

use bytes::Bytes;
use hyper::Method;

use crate::client::Call;

/// The kind of request the timed run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `PUT /{key}` with a fresh key each time.
    Put,
    /// `GET /{key}` (linearizable on our nodes; local on Go raftexample).
    Get,
    /// `GET /{key}?consistency=serializable` (Go raftexample takes the query as part of the
    /// key and answers 404).
    GetSerializable,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Put => "put",
            Mode::Get => "get",
            Mode::GetSerializable => "get-serializable",
        }
    }

    /// Whether keys must exist before the timed run.
    pub fn needs_preload(self) -> bool {
        !matches!(self, Mode::Put)
    }
}

/// Builds the requests of one run.
#[derive(Debug, Clone)]
pub struct Workload {
    mode: Mode,
    key_prefix: String,
    keys: u64,
    value: Bytes,
}

impl Workload {
    /// A workload of `mode` over keys `{key_prefix}{n}`, reading among `keys` keys in the get
    /// modes and writing values of `value_size` bytes.
    pub fn new(mode: Mode, key_prefix: String, keys: u64, value_size: usize) -> Workload {
        Workload {
            mode,
            key_prefix,
            keys: keys.max(1),
            value: value_of(value_size),
        }
    }

    /// How many keys the get modes read (and preload).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The timed run's request for `ticket` (unique per run), drawing from `rng` in get modes.
    pub fn call(&self, ticket: u64, rng: &mut Rng) -> Call {
        match self.mode {
            Mode::Put => self.put(ticket),
            Mode::Get => self.get(rng.below(self.keys), ""),
            Mode::GetSerializable => self.get(rng.below(self.keys), "?consistency=serializable"),
        }
    }

    /// The PUT that creates key number `n`.
    pub fn put(&self, n: u64) -> Call {
        Call {
            method: Method::PUT,
            path: format!("/{}{n}", self.key_prefix),
            body: self.value.clone(),
        }
    }

    /// The plain GET of key number `n` with `query` appended.
    pub fn get(&self, n: u64, query: &str) -> Call {
        Call {
            method: Method::GET,
            path: format!("/{}{n}{query}", self.key_prefix),
            body: Bytes::new(),
        }
    }
}

impl Workload {
    /// The PUT of this run's drain sentinel key (outside the numbered keys) to `value`.
    pub fn sentinel_put(&self, value: &str) -> Call {
        Call {
            method: Method::PUT,
            path: format!("/{}sentinel", self.key_prefix),
            body: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    /// The GET of this run's drain sentinel key.
    pub fn sentinel_get(&self) -> Call {
        Call {
            method: Method::GET,
            path: format!("/{}sentinel", self.key_prefix),
            body: Bytes::new(),
        }
    }
}

/// A printable value of exactly `size` bytes.
fn value_of(size: usize) -> Bytes {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size).map(|i| ALPHABET[i % ALPHABET.len()]).collect()
}

/// Whether `prefix` can go into a URL path unescaped and is not a reserved route
/// (`kv`, `members`, ...) or a number (`/{id}` is raftexample's membership route).
pub fn valid_key_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !prefix.bytes().all(|b| b.is_ascii_digit())
}

/// A small xorshift64* generator: enough to spread reads over keys, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value, uniform enough over `0..n` for `n` far below 2^64. `n` MUST be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_keys_are_unique_per_ticket_and_values_sized() {
        // Intent: put mode writes a distinct key per ticket with a value of the asked size.
        let w = Workload::new(Mode::Put, "p-".into(), 10, 100);
        let mut rng = Rng::new(1);
        let a = w.call(7, &mut rng);
        let b = w.call(8, &mut rng);
        assert_eq!(a.method, Method::PUT);
        assert_eq!(a.path, "/p-7");
        assert_ne!(a.path, b.path);
        assert_eq!(a.body.len(), 100);
    }

    #[test]
    fn get_modes_read_preloaded_keys() {
        // Intent: get modes only read keys 0..keys, serializable with the query appended.
        let w = Workload::new(Mode::GetSerializable, "g-".into(), 3, 10);
        let mut rng = Rng::new(42);
        for ticket in 0..100 {
            let call = w.call(ticket, &mut rng);
            assert_eq!(call.method, Method::GET);
            let n: u64 = call
                .path
                .strip_prefix("/g-")
                .and_then(|rest| rest.strip_suffix("?consistency=serializable"))
                .unwrap()
                .parse()
                .unwrap();
            assert!(n < 3);
        }
    }

    #[test]
    fn rng_spreads_over_all_keys() {
        // Intent: every key of a small key space gets read.
        let mut rng = Rng::new(0);
        let mut seen = [false; 16];
        for _ in 0..1000 {
            seen[rng.below(16) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn key_prefix_validation() {
        // Intent: prefixes that would need escaping or hit the numeric id route are refused.
        assert!(valid_key_prefix("bench-1700000000-"));
        assert!(!valid_key_prefix(""));
        assert!(!valid_key_prefix("a/b"));
        assert!(!valid_key_prefix("a b"));
        assert!(!valid_key_prefix("12"));
    }
}
