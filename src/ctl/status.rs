//! The JSON ctl reads (`GET /status`, `GET /members`, as `src/api.rs` and the engine's
//! `protocol::Status` write them) and the cluster discovery built on it: every member's client
//! URL comes from the `started` records in `/status`.
//!
//! Only the fields ctl uses are read; unknown fields are ignored, so a newer server's status
//! still reads.

use serde::Deserialize;

use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::{failed, Result};
use crate::ctl::retry::{Call, Policy, Reply, Session};

/// `GET /status`, the part ctl reads.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeStatus {
    /// The node that answered.
    pub id: u64,
    /// leader, follower, candidate or pre-candidate.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Known leader, 0 if none.
    pub leader: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Newest snapshot's index.
    pub snapshot_index: u64,
    /// Voters.
    #[serde(default)]
    pub voters: Vec<Member>,
    /// Learners.
    #[serde(default)]
    pub learners: Vec<Member>,
    /// Every member's last start: where it serves clients.
    #[serde(default)]
    pub started: Vec<Started>,
    /// Members whose NOSPACE alarm is raised.
    #[serde(default)]
    pub nospace_alarms: Vec<u64>,
    /// Members found diverged.
    #[serde(default)]
    pub diverged: Vec<Diverged>,
    /// Number of keys (the KV's).
    #[serde(default)]
    pub keys: Option<u64>,
    /// The KV's state digest, hex.
    #[serde(default)]
    pub state_digest: Option<String>,
}

/// A member as `/status` and `/members` list it.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    /// Raft ID.
    pub id: u64,
    /// Peer URL.
    pub url: String,
    /// Whether it is a learner.
    #[serde(default)]
    pub learner: bool,
    /// A learner that the leader promotes once it started and caught up.
    #[serde(default)]
    pub promote_when_ready: bool,
}

/// A member's last start record.
#[derive(Debug, Clone, Deserialize)]
pub struct Started {
    /// The member.
    pub id: u64,
    /// Where it serves clients.
    pub client_url: String,
}

/// A diverged member.
#[derive(Debug, Clone, Deserialize)]
pub struct Diverged {
    /// The member.
    pub id: u64,
}

/// `GET /members`.
#[derive(Debug, Clone, Deserialize)]
pub struct Members {
    /// Known leader, 0 if none.
    pub leader: u64,
    /// Voters.
    #[serde(default)]
    pub voters: Vec<Member>,
    /// Learners.
    #[serde(default)]
    pub learners: Vec<Member>,
}

impl NodeStatus {
    /// Where member `id` serves clients, from its start record (`None` when it has not
    /// started, or its URL does not parse).
    pub fn client_url(&self, id: u64) -> Option<Endpoint> {
        let started = self.started.iter().find(|s| s.id == id)?;
        Endpoint::parse(&started.client_url, "client URL").ok()
    }

    /// Every member (voters and learners) by ID, with its client URL when known.
    pub fn members(&self) -> Vec<(u64, Option<Endpoint>)> {
        let mut ids: Vec<u64> = self
            .voters
            .iter()
            .chain(&self.learners)
            .map(|m| m.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| (id, self.client_url(id)))
            .collect()
    }

    /// What is wrong with the cluster as this member sees it (alarms, divergence), for the
    /// errors column.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .nospace_alarms
            .iter()
            .map(|id| format!("NOSPACE alarm on member {id}"))
            .collect();
        problems.extend(
            self.diverged
                .iter()
                .map(|d| format!("member {} diverged", d.id)),
        );
        problems
    }
}

/// Parses the JSON of a 200 answer into `T`, or says why the answer is of no use.
///
/// # Errors
/// `Failed` naming the endpoint, for a status other than 200 (with its sentence) or JSON that
/// does not read as `T`.
pub fn parse_json<T: serde::de::DeserializeOwned>(reply: &Reply, route: &str) -> Result<T> {
    if reply.status.as_u16() != 200 {
        return Err(reply.refused());
    }
    serde_json::from_slice(&reply.body).map_err(|e| {
        failed(format!(
            "{} answered {route} with JSON this ctl cannot read ({e}): is it a raftexample-rs \
             member?",
            reply.endpoint
        ))
    })
}

/// `GET /status` from the first of `endpoints` that answers, by `policy`.
///
/// # Errors
/// As [`Session::send`], or an answer that is not a status.
pub async fn fetch(
    session: &Session,
    endpoints: &[Endpoint],
    policy: Policy,
) -> Result<(Endpoint, NodeStatus)> {
    let call = Call::read("/status", "the status request").with_policy(policy);
    let reply = session.send(endpoints, &call).await?;
    let status = parse_json(&reply, "/status")?;
    Ok((reply.endpoint, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_with_unknown_fields_and_lists_members_by_id() {
        // Intent: the server's /status (more fields than ctl reads) parses; members come in ID
        // order with the client URL of their start record, none for a member not started.
        let json = r#"{"id":2,"cluster_id":"ab","role":"follower","term":3,"leader":1,
            "commit_index":9,"applied_index":9,"last_index":9,"snapshot_index":1,
            "voters":[{"id":3,"url":"http://h:3","learner":false,"promote_when_ready":false},
                      {"id":1,"url":"http://h:1","learner":false,"promote_when_ready":false}],
            "learners":[{"id":4,"url":"http://h:4","learner":true,"promote_when_ready":true}],
            "started":[{"id":1,"incarnation":1,"client_url":"http://127.0.0.1:11"},
                       {"id":3,"incarnation":2,"client_url":"http://127.0.0.1:33"}],
            "nospace_alarms":[3],"diverged":[],"progress":null,"keys":5,
            "state_digest":"00ff"}"#;
        let s: NodeStatus = serde_json::from_str(json).unwrap();
        let members: Vec<(u64, Option<String>)> = s
            .members()
            .into_iter()
            .map(|(id, url)| (id, url.map(|u| u.to_string())))
            .collect();
        assert_eq!(
            members,
            vec![
                (1, Some("http://127.0.0.1:11".to_string())),
                (3, Some("http://127.0.0.1:33".to_string())),
                (4, None)
            ]
        );
        assert_eq!(s.keys, Some(5));
        assert_eq!(s.problems(), vec!["NOSPACE alarm on member 3".to_string()]);
    }
}
