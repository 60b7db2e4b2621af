//! `leader move ID`: `POST /leader` (body: the target ID), which only the leader can carry
//! out.
//!
//! The leader is found in any endpoint's `/status` (`leader`) and its client URL in `started`.
//! The request goes to the leader first and then to the other members: a member that does not
//! lead answers 503 (known not applied), so when leadership moved in between, the write
//! policy walks on to whoever leads now. A member that already sees the target lead answers
//! 204 at once.

use bytes::Bytes;
use hyper::Method;
use serde_json::json;

use super::Ctx;
use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::{failed, Result};
use crate::ctl::output::{self, Format};
use crate::ctl::retry::{Call, Policy};
use crate::ctl::status;

/// `leader move ID`.
pub async fn move_to(ctx: &Ctx, id: u64) -> Result<()> {
    let (_, status) = status::fetch(&ctx.session, &ctx.endpoints, Policy::Read).await?;
    let from = status.leader;
    if from == id {
        return print(
            ctx,
            from,
            id,
            format!("Member {id} already leads (term {})", status.term),
        );
    }
    let mut order: Vec<Endpoint> = Vec::new();
    if let Some(leader) = status.client_url(from) {
        order.push(leader);
    }
    for (_, url) in status.members() {
        if let Some(url) = url.filter(|u| !order.contains(u)) {
            order.push(url);
        }
    }
    if order.is_empty() {
        return Err(failed(
            "no member's client URL is known (no start records in /status): cannot reach the \
             leader",
        ));
    }
    let call = Call::write(
        Method::POST,
        "/leader",
        Bytes::from(id.to_string()),
        "the leader transfer",
    );
    let reply = ctx.session.send(&order, &call).await?;
    if !reply.status.is_success() {
        return Err(reply.refused());
    }
    let sentence = if from == 0 {
        format!("Leadership transferred to member {id}")
    } else {
        format!("Leadership transferred from member {from} to member {id}")
    };
    print(ctx, from, id, sentence)
}

fn print(ctx: &Ctx, from: u64, to: u64, sentence: String) -> Result<()> {
    match ctx.format {
        Format::Json => output::json(&json!({ "from": from, "to": to })),
        Format::Simple | Format::Table => output::line(&sentence),
    }
}
