//! `leader move ID`: `POST /leader` (body: the target ID), which only the leader can carry
//! out.
//!
//! The leader is found in any endpoint's `/status` (`leader`) and its client URL in `started`
//! (asked again until the deadline while there is no leader, or its start record is not
//! applied yet). The request goes to the leader first and then to the other members: a member that does not
//! lead answers 503 (known not applied), so when leadership moved in between, the write
//! policy walks on to whoever leads now. A member that already sees the target lead answers
//! 204 at once.

use std::time::Instant;

use bytes::Bytes;
use hyper::Method;
use serde_json::json;

use super::Ctx;
use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::{failed, Result};
use crate::ctl::output::{self, Format};
use crate::ctl::retry::{Call, Policy, ROUND_PAUSE};
use crate::ctl::status::{self, NodeStatus};

/// `leader move ID`.
pub async fn move_to(ctx: &Ctx, id: u64) -> Result<()> {
    let (status, leader_url) = find_leader(ctx).await?;
    let from = status.leader;
    if from == id {
        return print(
            ctx,
            from,
            id,
            format!("Member {id} already leads (term {})", status.term),
        );
    }
    let mut order = vec![leader_url];
    for (_, url) in status.members() {
        if let Some(url) = url.filter(|u| !order.contains(u)) {
            order.push(url);
        }
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
    print(
        ctx,
        from,
        id,
        format!("Leadership transferred from member {from} to member {id}"),
    )
}

/// A status that names a leader whose client URL is known (its start record is applied),
/// asked again until the deadline: during an election there is no leader, and right after a
/// start its record may not be applied yet.
async fn find_leader(ctx: &Ctx) -> Result<(NodeStatus, Endpoint)> {
    loop {
        let (endpoint, status) = status::fetch(&ctx.session, &ctx.endpoints, Policy::Read).await?;
        let why = match status.client_url(status.leader) {
            Some(url) if status.leader != 0 => return Ok((status, url)),
            _ if status.leader == 0 => format!("{endpoint} knows no leader (term {})", status.term),
            _ => format!(
                "the client URL of the leader, member {}, is not known yet (no start record in \
                 the status of {endpoint})",
                status.leader
            ),
        };
        if Instant::now() + ROUND_PAUSE >= ctx.session.deadline() {
            return Err(failed(format!("cannot find the leader: {why}")));
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

fn print(ctx: &Ctx, from: u64, to: u64, sentence: String) -> Result<()> {
    match ctx.format {
        Format::Json => output::json(&json!({ "from": from, "to": to })),
        Format::Simple | Format::Table => output::line(&sentence),
    }
}
