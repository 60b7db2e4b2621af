//! One proxied connection.
//!
//! # Layout
//! [`serve`] connects to the target and runs, in the connection's single task:
//! - two lanes (client→target and target→client), each a reader that stamps every chunk
//!   with the instant it was read and a writer that forwards it according to the lane's
//!   current fault; a bounded queue of [`LANE_QUEUE_CHUNKS`] chunks sits between them, so a
//!   delayed lane keeps reading (latency, not a rate limit) and a slow peer pushes back;
//! - a guard that resets the connection as soon as a `Drop` rule covers it, or a lane that
//!   discarded bytes is no longer blackholed.
//!
//! # Invariants
//! - Faults are read from the rule table on every chunk and on every table change, so a new
//!   rule reaches this connection without waiting for new traffic.
//! - Chunks leave a lane in the order they were read; a blackholed chunk is discarded, never
//!   forwarded later.
//! - A normal end (both lanes reached EOF and were flushed) closes with FIN; every other end
//!   (an I/O error, a `Drop`, a lifted blackhole) resets both sockets with RST.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};

use crate::fault::{Fault, Lane, Rules};

/// Longest wait for the target to accept; on loopback a live target answers at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes read in one chunk.
const CHUNK_BYTES: usize = 16 * 1024;

/// Chunks queued per lane between reader and writer (at most 1 MiB per lane with
/// [`CHUNK_BYTES`]); when full, the reader waits, which pushes back on the sender.
pub(crate) const LANE_QUEUE_CHUNKS: usize = 64;

/// Why a lane stopped before a clean EOF.
#[derive(Debug)]
enum LaneEnd {
    /// Reading or writing a socket failed.
    Io,
    /// Bytes were discarded and the lane is no longer blackholed: the stream has a hole.
    Broken,
    /// The proxy is shutting down (its rule table is gone).
    Closed,
}

impl From<std::io::Error> for LaneEnd {
    fn from(_: std::io::Error) -> Self {
        LaneEnd::Io
    }
}

/// What one connection needs to know about the rules, shared by its lanes and its guard.
struct Ctx<'a> {
    source: IpAddr,
    rules: &'a watch::Receiver<Rules>,
    /// Per lane (indexed by [`Lane::index`]): whether bytes were discarded.
    broken: &'a [AtomicBool; 2],
}

impl Ctx<'_> {
    fn fault(&self, lane: Lane) -> Fault {
        self.rules.borrow().fault(self.source, lane)
    }

    /// Records that `lane` discarded bytes. Fails when the blackhole was lifted meanwhile:
    /// the guard may already have looked at the flag before it was set.
    fn discarded(&self, lane: Lane) -> Result<(), LaneEnd> {
        self.broken[lane.index()].store(true, Ordering::SeqCst);
        if self.fault(lane) == Fault::Blackhole {
            Ok(())
        } else {
            Err(LaneEnd::Broken)
        }
    }
}

/// A chunk read from one side, waiting to be written to the other.
struct Chunk {
    read_at: Instant,
    bytes: Vec<u8>,
}

/// Proxies `client` (whose peer address has IP `source`) to `target` until both directions
/// end, a fault resets it, or the task is aborted (dropping it closes both sockets).
pub(crate) async fn serve(
    mut client: TcpStream,
    source: IpAddr,
    target: SocketAddr,
    rules: watch::Receiver<Rules>,
) {
    let mut upstream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => stream,
        // The target is down: look like it to the client.
        _ => return reset(&client),
    };
    let _ = upstream.set_nodelay(true);
    let broken = [AtomicBool::new(false), AtomicBool::new(false)];
    let ctx = Ctx {
        source,
        rules: &rules,
        broken: &broken,
    };
    let clean = {
        let (client_rd, client_wr) = client.split();
        let (target_rd, target_wr) = upstream.split();
        let lanes = async {
            tokio::try_join!(
                run_lane(client_rd, target_wr, Lane::ToTarget, &ctx),
                run_lane(target_rd, client_wr, Lane::FromTarget, &ctx),
            )
        };
        tokio::select! {
            ended = lanes => ended.is_ok(),
            () = guard(&ctx) => false,
        }
    };
    if !clean {
        reset(&client);
        reset(&upstream);
    }
}

/// Makes the coming close of `stream` an abortive one (RST), as a failed link looks.
fn reset(stream: &TcpStream) {
    // Failing to set the option only turns the RST into a FIN: still a close.
    let _ = stream.set_zero_linger();
}

/// Resolves when this connection must be reset: a `Drop` covers it, a lane with a hole is
/// no longer blackholed, or the proxy is gone.
async fn guard(ctx: &Ctx<'_>) {
    let mut rules = ctx.rules.clone();
    loop {
        {
            let table = rules.borrow_and_update();
            if table.drops(ctx.source) {
                return;
            }
            for lane in [Lane::ToTarget, Lane::FromTarget] {
                let holed = ctx.broken[lane.index()].load(Ordering::SeqCst);
                if holed && table.fault(ctx.source, lane) != Fault::Blackhole {
                    return;
                }
            }
        }
        if rules.changed().await.is_err() {
            return;
        }
    }
}

/// Forwards one direction: reads from `rd` and writes to `wr` under `lane`'s faults, then
/// half-closes `wr` after EOF.
async fn run_lane<R, W>(rd: R, wr: W, lane: Lane, ctx: &Ctx<'_>) -> Result<(), LaneEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(LANE_QUEUE_CHUNKS);
    tokio::try_join!(
        read_chunks(rd, tx, lane, ctx),
        write_chunks(rx, wr, lane, ctx)
    )?;
    Ok(())
}

/// Reads chunks until EOF, discarding them while the lane is blackholed.
async fn read_chunks<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<Chunk>,
    lane: Lane,
    ctx: &Ctx<'_>,
) -> Result<(), LaneEnd> {
    loop {
        let mut bytes = Vec::with_capacity(CHUNK_BYTES);
        if rd.read_buf(&mut bytes).await? == 0 {
            return Ok(()); // EOF: dropping `tx` lets the writer drain and half-close.
        }
        if ctx.fault(lane) == Fault::Blackhole {
            ctx.discarded(lane)?;
            continue;
        }
        let chunk = Chunk {
            read_at: Instant::now(),
            bytes,
        };
        if tx.send(chunk).await.is_err() {
            return Ok(()); // The writer ended; its result decides the lane's.
        }
    }
}

/// Writes queued chunks in order, each no earlier than its read instant plus the lane's
/// current delay; discards them while the lane is blackholed.
async fn write_chunks<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Chunk>,
    mut wr: W,
    lane: Lane,
    ctx: &Ctx<'_>,
) -> Result<(), LaneEnd> {
    let mut rules = ctx.rules.clone();
    while let Some(chunk) = rx.recv().await {
        loop {
            let fault = rules.borrow_and_update().fault(ctx.source, lane);
            let due = match fault {
                Fault::Blackhole => {
                    ctx.discarded(lane)?;
                    break;
                }
                // Under Drop the guard resets the connection; until it does, forward.
                Fault::Pass | Fault::Drop => chunk.read_at,
                Fault::Delay(delay) => chunk.read_at + delay,
            };
            if Instant::now() >= due {
                wr.write_all(&chunk.bytes).await?;
                break;
            }
            tokio::select! {
                () = sleep_until(due) => {}
                changed = rules.changed() => changed.map_err(|_| LaneEnd::Closed)?,
            }
        }
    }
    wr.shutdown().await?;
    Ok(())
}
