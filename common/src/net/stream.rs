//! Control frames over QUIC streams.

use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::NetError;
use crate::proto::frame::{self, LEN_PREFIX, MAX_CONTROL_FRAME};

/// Sends one control frame.
pub async fn write_frame<T: Serialize>(send: &mut SendStream, message: &T) -> Result<(), NetError> {
    let bytes = frame::encode(message, MAX_CONTROL_FRAME)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Receives one control frame of at most `max` body bytes. The length is
/// checked before the body is read, so an announced giant costs nothing.
pub async fn read_frame<T: Serialize + DeserializeOwned>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<T, NetError> {
    let mut prefix = [0u8; LEN_PREFIX];
    recv.read_exact(&mut prefix).await?;
    let len = frame::body_len(prefix, max)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(frame::decode_body(&body)?)
}

/// One message and its one answer on a fresh stream of `connection`: the
/// shape of every small exchange (a status, an observation, a leaf's
/// traits). A peer that does not know the message resets the stream,
/// which comes back as an error.
pub async fn ask<Q: Serialize, A: Serialize + DeserializeOwned>(
    connection: &quinn::Connection,
    message: &Q,
) -> Result<A, NetError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    write_frame(&mut send, message).await?;
    send.finish()?;
    read_frame(&mut recv, MAX_CONTROL_FRAME).await
}
