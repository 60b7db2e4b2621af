//! `get`, `put`, `del`: `/kv/<key>`.

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::{put_bytes, Ctx};
use crate::ctl::args::Consistency;
use crate::ctl::endpoint::encode_key;
use crate::ctl::error::{failed, Result};
use crate::ctl::output::{self, Format};
use crate::ctl::retry::{Call, Reply};

/// `get KEY`: the value (simple), or `{"key", "value", "applied_index"}` (json).
pub async fn get(ctx: &Ctx, key: &[u8], consistency: Consistency) -> Result<()> {
    let path = format!("/kv/{}{}", encode_key(key), consistency.query());
    let reply = ctx
        .session
        .send(&ctx.endpoints, &Call::read(path, "the read"))
        .await?;
    match reply.status.as_u16() {
        200 => {}
        404 => {
            return Err(failed(format!(
                "key not found: {}",
                String::from_utf8_lossy(key)
            )))
        }
        _ => return Err(reply.refused()),
    }
    match ctx.format {
        Format::Json => {
            let mut object = Map::new();
            put_bytes(&mut object, "key", key);
            put_bytes(&mut object, "value", &reply.body);
            if let Some(index) = reply.header_u64("x-raft-applied-index") {
                object.insert("applied_index".into(), index.into());
            }
            output::json(&Value::Object(object))
        }
        Format::Simple | Format::Table => {
            let mut value = reply.body.to_vec();
            value.push(b'\n');
            output::write(&value)
        }
    }
}

/// `put KEY VALUE`: OK once committed and applied.
pub async fn put(ctx: &Ctx, key: &[u8], value: Bytes) -> Result<()> {
    let call = Call::write(
        Method::PUT,
        format!("/kv/{}", encode_key(key)),
        value,
        "the write",
    );
    let reply = ctx.session.send(&ctx.endpoints, &call).await?;
    written(ctx, key, &reply)
}

/// `del KEY`: OK once applied.
pub async fn del(ctx: &Ctx, key: &[u8]) -> Result<()> {
    let call = Call::write(
        Method::DELETE,
        format!("/kv/{}", encode_key(key)),
        Bytes::new(),
        "the delete",
    );
    let reply = ctx.session.send(&ctx.endpoints, &call).await?;
    written(ctx, key, &reply)
}

/// `OK` (simple) or `{"key", "index", "term"}` (json) for a 2xx write.
fn written(ctx: &Ctx, key: &[u8], reply: &Reply) -> Result<()> {
    if !reply.status.is_success() {
        return Err(reply.refused());
    }
    match ctx.format {
        Format::Json => {
            let mut object = Map::new();
            put_bytes(&mut object, "key", key);
            object.insert("index".into(), json!(reply.header_u64("x-raft-index")));
            object.insert("term".into(), json!(reply.header_u64("x-raft-term")));
            output::json(&Value::Object(object))
        }
        Format::Simple | Format::Table => output::line("OK"),
    }
}
