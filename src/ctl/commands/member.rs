//! `member list | add | promote | remove`: `/members`.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use super::Ctx;
use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::Result;
use crate::ctl::output::{self, Format};
use crate::ctl::retry::Call;
use crate::ctl::retry::{Policy, Reply};
use crate::ctl::status::{self, parse_json, Member, Members};

/// Longest wait for the client URLs of `member list` (from `/status`; without them the list
/// is still printed).
const CLIENT_URLS_TIMEOUT: Duration = Duration::from_secs(1);

/// `member list`.
pub async fn list(ctx: &Ctx) -> Result<()> {
    let reply = ctx
        .session
        .send(&ctx.endpoints, &Call::read("/members", "the member list"))
        .await?;
    let members: Members = parse_json(&reply, "/members")?;
    let answered = [reply.endpoint.clone()];
    let urls = tokio::time::timeout(
        CLIENT_URLS_TIMEOUT,
        status::fetch(&ctx.session, &answered, Policy::Once),
    )
    .await
    .ok()
    .and_then(|status| status.ok())
    .map(|(_, status)| status);
    let mut all: Vec<&Member> = members.voters.iter().chain(&members.learners).collect();
    all.sort_by_key(|m| m.id);
    let rows: Vec<Row> = all
        .into_iter()
        .map(|m| Row {
            id: m.id,
            role: role(m),
            peer_url: m.url.clone(),
            client_url: urls
                .as_ref()
                .and_then(|s| s.client_url(m.id))
                .map(|u| u.to_string()),
            is_leader: m.id == members.leader,
            promote_when_ready: m.promote_when_ready,
        })
        .collect();
    print_list(ctx.format, members.leader, &rows)
}

/// A member as `member list` shows it.
struct Row {
    id: u64,
    role: &'static str,
    peer_url: String,
    client_url: Option<String>,
    is_leader: bool,
    promote_when_ready: bool,
}

/// voter; learner; joining: a learner the leader promotes once it started and caught up.
fn role(member: &Member) -> &'static str {
    match (member.learner, member.promote_when_ready) {
        (false, _) => "voter",
        (true, false) => "learner",
        (true, true) => "joining",
    }
}

fn print_list(format: Format, leader: u64, rows: &[Row]) -> Result<()> {
    match format {
        Format::Json => {
            let members: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "role": r.role,
                        "peer_url": r.peer_url,
                        "client_url": r.client_url,
                        "is_leader": r.is_leader,
                        "promote_when_ready": r.promote_when_ready,
                    })
                })
                .collect();
            output::json(&json!({ "leader": leader, "members": members }))
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.role.to_string(),
                        r.peer_url.clone(),
                        r.client_url.clone().unwrap_or_default(),
                        r.is_leader.to_string(),
                    ]
                })
                .collect();
            output::line(&output::table(
                &["ID", "ROLE", "PEER URL", "CLIENT URL", "IS LEADER"],
                &cells,
            ))
        }
        Format::Simple => {
            for r in rows {
                output::line(&format!(
                    "{}, {}, {}, {}, {}",
                    r.id,
                    r.role,
                    r.peer_url,
                    r.client_url.as_deref().unwrap_or(""),
                    r.is_leader
                ))?;
            }
            Ok(())
        }
    }
}

/// `member add ID PEER_URL [--learner]`.
pub async fn add(ctx: &Ctx, id: u64, peer_url: &str, learner: bool) -> Result<()> {
    let url = Endpoint::parse(peer_url, "peer URL")?;
    let query = if learner { "?learner=true" } else { "" };
    let call = Call::write(
        Method::POST,
        format!("/members/{id}{query}"),
        Bytes::from(url.as_str().to_string()),
        "the membership change",
    );
    let reply = change(ctx, &call).await?;
    let how = if learner {
        format!("as a learner (promote it with `member promote {id}` once it caught up)")
    } else {
        "as a learner that becomes a voter once it started and caught up".to_string()
    };
    let sentence = format!(
        "Member {id} added to the cluster at {url} {how}: start it with --join and --id {id}"
    );
    done(
        ctx,
        &reply,
        sentence,
        json!({ "id": id, "peer_url": url.as_str(), "learner": learner }),
    )
}

/// `member promote ID`.
pub async fn promote(ctx: &Ctx, id: u64) -> Result<()> {
    let call = Call::write(
        Method::POST,
        format!("/members/{id}/promote"),
        Bytes::new(),
        "the promotion",
    );
    let reply = change(ctx, &call).await?;
    done(
        ctx,
        &reply,
        format!("Member {id} promoted to a voter"),
        json!({ "id": id }),
    )
}

/// `member remove ID`.
pub async fn remove(ctx: &Ctx, id: u64) -> Result<()> {
    let call = Call::write(
        Method::DELETE,
        format!("/members/{id}"),
        Bytes::new(),
        "the membership change",
    );
    let reply = change(ctx, &call).await?;
    done(
        ctx,
        &reply,
        format!("Member {id} removed from the cluster"),
        json!({ "id": id }),
    )
}

/// Sends a membership change; any answer but 2xx is its refusal.
async fn change(ctx: &Ctx, call: &Call) -> Result<Reply> {
    let reply = ctx.session.send(&ctx.endpoints, call).await?;
    if !reply.status.is_success() {
        return Err(reply.refused());
    }
    Ok(reply)
}

/// Prints `sentence` (simple, table) or `object` with the index and term (json).
fn done(ctx: &Ctx, reply: &Reply, sentence: String, mut object: Value) -> Result<()> {
    match ctx.format {
        Format::Json => {
            object["index"] = json!(reply.header_u64("x-raft-index"));
            object["term"] = json!(reply.header_u64("x-raft-term"));
            output::json(&object)
        }
        Format::Simple | Format::Table => output::line(&sentence),
    }
}
