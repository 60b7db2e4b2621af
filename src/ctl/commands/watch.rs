//! `watch`: the Server-Sent Events of `GET /events`, printed as they arrive.
//!
//! - simple: `<event> <data>` per event (`leader {"term":3,...}`);
//! - json: `{"event": <event>, "data": <data>}` per line, the data as the server sent it (the
//!   event's name is added because the data alone does not say what happened).
//!
//! It runs until interrupted (exit 0), until the stream ends (exit 0), or until it breaks
//! (exit 1). The command timeout bounds only the start.

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::Ctx;
use crate::ctl::client::error_chain;
use crate::ctl::error::{failed, Result};
use crate::ctl::output::{self, Format};
use crate::ctl::retry::Call;

/// Longest line of the event stream kept in memory.
const MAX_LINE_BYTES: usize = 1 << 20;

/// `watch`.
pub async fn watch(ctx: &Ctx) -> Result<()> {
    let stream = ctx
        .session
        .open(&ctx.endpoints, &Call::read("/events", "the event stream"))
        .await?;
    let endpoint = stream.endpoint.clone();
    tokio::select! {
        result = follow(stream.body, ctx.format) => result.map_err(|why| {
            failed(format!("the event stream from {endpoint} broke off: {why}"))
        }),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Prints every event of `body` until it ends.
async fn follow(mut body: Incoming, format: Format) -> std::result::Result<(), String> {
    let mut parser = Parser::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error_chain(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in parser.push(&data)? {
            output::line(&render(&event, format)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    name: String,
    data: String,
}

fn render(event: &Event, format: Format) -> String {
    match format {
        Format::Json => {
            let data = match serde_json::from_str::<serde_json::Value>(&event.data) {
                Ok(_) => event.data.clone(),
                Err(_) => serde_json::Value::from(event.data.as_str()).to_string(),
            };
            format!(
                "{{\"event\":{},\"data\":{data}}}",
                serde_json::Value::from(event.name.as_str())
            )
        }
        Format::Simple | Format::Table => format!("{} {}", event.name, event.data),
    }
}

/// The `text/event-stream` format: `field: value` lines, events ended by a blank line,
/// comments starting with `:`, several `data` lines joined with newlines, `message` as the
/// default event name.
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// The events completed by `bytes`.
    fn push(&mut self, bytes: &[u8]) -> std::result::Result<Vec<Event>, String> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                if self.line.len() > MAX_LINE_BYTES {
                    return Err(format!(
                        "a line of the stream is over {MAX_LINE_BYTES} bytes"
                    ));
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.field(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Takes one line; a blank line completes the event being read.
    fn field(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take();
            let name = self.name.take();
            return data.map(|data| Event {
                name: name.unwrap_or_else(|| "message".to_string()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunks_and_rendered() {
        // Intent: comments are skipped, an event split over chunks is whole, CRLF works,
        // multi-line data joins, and both formats render.
        let stream = b": events\n\nevent: leader\ndata: {\"term\":3}\n\nevent: snap\r\ndata: a\r\ndata: b\r\n\r\n";
        let mut parser = Parser::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(5) {
            events.extend(parser.push(chunk).unwrap());
        }
        assert_eq!(
            events,
            vec![
                Event {
                    name: "leader".into(),
                    data: "{\"term\":3}".into()
                },
                Event {
                    name: "snap".into(),
                    data: "a\nb".into()
                }
            ]
        );
        assert_eq!(render(&events[0], Format::Simple), "leader {\"term\":3}");
        assert_eq!(
            render(&events[0], Format::Json),
            "{\"event\":\"leader\",\"data\":{\"term\":3}}"
        );
        assert_eq!(
            render(&events[1], Format::Json),
            "{\"event\":\"snap\",\"data\":\"a\\nb\"}"
        );
    }
}
