//! The registry's snapshot image: the whole state, serialised deterministically.
//!
//! ```text
//! image:    [version u8 = 1][service count u32][service ...]      (empty image = empty state)
//! service:  [name str16][instance count u32][instance ...]
//! instance: [name str16][address str32][ttl_ms u64][last_renewal_index u64]
//! ```
//! (`str16`, `str32`: see `codec.rs`.) Services and instances are in strictly increasing name
//! order, every service has at least one instance, and every field obeys the rules of
//! `command.rs`: the same state always gives the same bytes on every replica, and
//! [`decode`] accepts only such bytes. The engine wraps the image in its own envelope (with
//! the membership); this file never sees that.

use std::collections::BTreeMap;

use crate::codec::{malformed, put_str16, put_str32, put_u32, put_u64, Malformed, Reader};
use crate::command::{check_address, check_name, check_ttl};
use crate::registry::{Instance, Services};

/// The image format this release writes and reads.
const VERSION: u8 = 1;

/// The image of `services`.
pub fn encode(services: &Services) -> Vec<u8> {
    if services.is_empty() {
        return Vec::new();
    }
    let mut out = vec![VERSION];
    put_u32(&mut out, count(services.len()));
    for (name, instances) in services {
        put_str16(&mut out, name);
        put_u32(&mut out, count(instances.len()));
        for (name, i) in instances {
            put_str16(&mut out, name);
            put_str32(&mut out, &i.address);
            put_u64(&mut out, i.ttl_ms);
            put_u64(&mut out, i.last_renewal_index);
        }
    }
    out
}

/// Every count fits: a state with 2^32 services would not fit in memory first.
fn count(n: usize) -> u32 {
    u32::try_from(n).expect("fewer than 2^32 services or instances per service")
}

/// Decodes and checks a whole image; never panics, whatever the bytes.
///
/// # Errors
/// [`Malformed`] naming the first problem.
pub fn decode(image: &[u8]) -> Result<Services, Malformed> {
    let mut services = Services::new();
    if image.is_empty() {
        return Ok(services);
    }
    let mut r = Reader::new(image);
    let version = r.u8("the image version")?;
    if version != VERSION {
        return Err(malformed(format!("unknown image version {version}")));
    }
    let service_count = r.u32("the service count")?;
    if service_count == 0 {
        return Err(malformed("a non-empty image with no service"));
    }
    for _ in 0..service_count {
        let name = r.str16("a service name")?;
        check_name("service", name).map_err(Malformed)?;
        if services
            .keys()
            .next_back()
            .is_some_and(|last| last.as_str() >= name)
        {
            return Err(malformed(format!("service {name:?} is out of order")));
        }
        services.insert(name.to_string(), decode_instances(&mut r)?);
    }
    r.finish("last service")?;
    Ok(services)
}

fn decode_instances(r: &mut Reader<'_>) -> Result<BTreeMap<String, Instance>, Malformed> {
    let mut instances = BTreeMap::new();
    let instance_count = r.u32("an instance count")?;
    if instance_count == 0 {
        return Err(malformed("a service with no instance"));
    }
    for _ in 0..instance_count {
        let name = r.str16("an instance name")?;
        check_name("instance", name).map_err(Malformed)?;
        if instances
            .keys()
            .next_back()
            .is_some_and(|last: &String| last.as_str() >= name)
        {
            return Err(malformed(format!("instance {name:?} is out of order")));
        }
        let address = r.str32("an address")?;
        check_address(address).map_err(Malformed)?;
        let ttl_ms = r.u64("a TTL")?;
        check_ttl(ttl_ms).map_err(Malformed)?;
        let last_renewal_index = r.u64("a renewal index")?;
        let instance = Instance {
            address: address.to_string(),
            ttl_ms,
            last_renewal_index,
        };
        instances.insert(name.to_string(), instance);
    }
    Ok(instances)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Services {
        let mut services = Services::new();
        for (service, names) in [("db", &["a", "b"][..]), ("web", &["w-1"][..])] {
            let instances = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let instance = Instance {
                        address: format!("10.0.0.{i}:80"),
                        ttl_ms: 1000 + i as u64,
                        last_renewal_index: 7 + i as u64,
                    };
                    (n.to_string(), instance)
                })
                .collect();
            services.insert(service.to_string(), instances);
        }
        services
    }

    // Intent: an image decodes to the state it came from; the empty image is the empty
    // state; every truncation, a trailing byte, a wrong version and every single-byte flip
    // is either refused or decodes to a state that re-encodes to the same bytes (canonical),
    // never a panic.
    #[test]
    fn round_trip_and_damage() {
        let services = sample();
        let image = encode(&services);
        assert_eq!(decode(&image).unwrap(), services);
        assert!(decode(&[]).unwrap().is_empty());
        assert!(encode(&Services::new()).is_empty());
        for cut in 1..image.len() {
            assert!(decode(&image[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = image.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        for at in 0..image.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut damaged = image.clone();
                damaged[at] ^= flip;
                if let Ok(state) = decode(&damaged) {
                    assert_eq!(encode(&state), damaged, "byte {at} flipped by {flip:#x}");
                }
            }
        }
    }

    // Intent: images that break an ordering or emptiness rule are refused.
    #[test]
    fn non_canonical_images_are_refused() {
        let mut out = vec![VERSION];
        put_u32(&mut out, 0);
        assert!(decode(&out).is_err(), "no service");
        let mut out = vec![VERSION];
        put_u32(&mut out, 1);
        put_str16(&mut out, "web");
        put_u32(&mut out, 0);
        assert!(decode(&out).is_err(), "a service without instances");
        let mut out = vec![VERSION];
        put_u32(&mut out, 2);
        for name in ["web", "db"] {
            put_str16(&mut out, name);
            put_u32(&mut out, 1);
            put_str16(&mut out, "i");
            put_str32(&mut out, "a");
            put_u64(&mut out, 1);
            put_u64(&mut out, 1);
        }
        assert!(decode(&out).is_err(), "services out of order");
    }
}
